package store

import "errors"

// ErrNoRedis is returned by NewRedisSessions without a Redis client.
var ErrNoRedis = errors.New("store: no redis client")

// Errors of the history log.
var (
	// ErrNotLog means the file is not a meshchat history log: corrupt,
	// another program's bbolt file, or not bbolt at all.
	ErrNotLog = errors.New("store: not a meshchat history log")
	// ErrLogLocked means another process has the log open.
	ErrLogLocked = errors.New("store: history log in use by another process")
	// ErrLogClosed is returned by calls after Close.
	ErrLogClosed = errors.New("store: history log closed")
	// ErrLogEpoch means an Append does not continue the stored stream's
	// epoch (Reset starts an epoch).
	ErrLogEpoch = errors.New("store: append outside the stored epoch")
)
