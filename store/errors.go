package store

import "errors"

// ErrNoRedis is returned by NewRedisSessions without a Redis client.
var ErrNoRedis = errors.New("store: no redis client")
