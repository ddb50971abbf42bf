package redis

import "errors"

var (
	// ErrNoURL is returned by New without Config.URL.
	ErrNoURL = errors.New("redis broker: no URL")
	// ErrNoHandler is returned by Start without a handler.
	ErrNoHandler = errors.New("redis broker: nil handler")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("redis broker: already started")
	// ErrNotStarted is returned by Subscribe before Start.
	ErrNotStarted = errors.New("redis broker: not started")
	// errBadReply means Redis answered a script with something unexpected.
	errBadReply = errors.New("redis broker: unexpected reply")
)
