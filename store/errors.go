package store

import "errors"

// ErrNoRedis is returned by NewRedisSessions without a Redis client.
var ErrNoRedis = errors.New("store: no redis client")

// Errors of the session revocations.
var (
	// ErrEmptySession is returned by Revocations.Revoke for an empty id.
	ErrEmptySession = errors.New("store: empty session id")
	// ErrRevocationsNoNode is returned by NewRevocations without
	// RevocationConfig.Node.
	ErrRevocationsNoNode = errors.New("store: revocations: no node name")
	// ErrRevocationsNoBroker is returned by NewRevocations without
	// RevocationConfig.Broker.
	ErrRevocationsNoBroker = errors.New("store: revocations: no broker")
	// ErrRevocationsNegative is returned by NewRevocations when a size or
	// duration in RevocationConfig is negative.
	ErrRevocationsNegative = errors.New("store: revocations: negative size or duration in config")
	// ErrRevocationsStarted is returned by a second call to
	// Revocations.Start.
	ErrRevocationsStarted = errors.New("store: revocations already started")
)
