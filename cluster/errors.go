package cluster

import "errors"

// ErrNotStarted is returned by methods that need a running memberlist.
var ErrNotStarted = errors.New("cluster: not started")

// ErrShutdown is returned by methods called after Shutdown.
var ErrShutdown = errors.New("cluster: shut down")

// ErrBadMeta is returned when node metadata cannot be decoded.
var ErrBadMeta = errors.New("cluster: malformed node metadata")
