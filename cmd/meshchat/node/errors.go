package node

import "errors"

// ErrNotReady is what Ready (and so /readyz) reports while the node cannot
// serve.
var ErrNotReady = errors.New("node: not ready")

// ErrStopping is what Ready reports once a graceful stop has begun, so a
// load balancer takes the node out before its listener closes.
var ErrStopping = errors.New("node: stopping")
