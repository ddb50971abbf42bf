package transport

import "errors"

// ErrUnavailable means the broker cannot accept or deliver right now (Redis
// down, the channel's owner unreachable). The caller may retry later; the
// publication was not accepted.
var ErrUnavailable = errors.New("transport: unavailable")

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("transport: broker closed")
