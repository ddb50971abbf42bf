package inproc

import "errors"

var (
	// ErrNodeTaken is returned by New when an open broker on the same
	// Network already uses the node name.
	ErrNodeTaken = errors.New("inproc broker: node name already used on this network")
	// ErrNoHandler is returned by Start without a handler.
	ErrNoHandler = errors.New("inproc broker: nil handler")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("inproc broker: already started")
)
