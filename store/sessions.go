package store

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/sessions"
	"github.com/rbcervilla/redisstore/v9"
	goredis "github.com/redis/go-redis/v9"
)

// DefaultSessionMaxAge is how long a session lives unless configured.
const DefaultSessionMaxAge = 7 * 24 * time.Hour

// RedisKeyPrefix prefixes every session key in Redis.
const RedisKeyPrefix = "meshchat:session:"

// SessionOptions configure the session cookie. Zero values mean the
// documented defaults.
type SessionOptions struct {
	// MaxAge is how long a session lives, rounded down to seconds.
	// Default DefaultSessionMaxAge (7 days).
	MaxAge time.Duration
	// Path is the cookie path. Default "/".
	Path string
	// Domain is the cookie domain. Default none (the request's host).
	Domain string
	// Secure marks cookies Secure by default. Default false: package web
	// sets it per request when the request came over TLS.
	Secure bool
}

func (o SessionOptions) gorilla() sessions.Options {
	maxAge := o.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultSessionMaxAge
	}
	path := o.Path
	if path == "" {
		path = "/"
	}
	return sessions.Options{
		Path:     path,
		Domain:   o.Domain,
		MaxAge:   int(maxAge / time.Second),
		Secure:   o.Secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

// NewCookieStore returns a store that keeps the whole session in a cookie,
// authenticated with hashKey (HMAC-SHA256; 32 or 64 bytes) and encrypted
// with blockKey (AES; 16, 24 or 32 bytes; nil disables encryption). Every
// node given the same keys accepts the others' cookies. A cookie store
// cannot forget a session by itself: logout must also be recorded
// cluster-wide (Revocations.Revoke), which package web does.
func NewCookieStore(hashKey, blockKey []byte, o SessionOptions) sessions.Store {
	s := sessions.NewCookieStore(hashKey, blockKey)
	opts := o.gorilla()
	s.Options = &opts
	// Keep the codecs' own expiry in step with the cookie's.
	s.MaxAge(opts.MaxAge)
	s.Options.HttpOnly = true
	s.Options.SameSite = http.SameSiteLaxMode
	return s
}

// NewRedisSessions returns a store that keeps sessions in Redis under
// RedisKeyPrefix, with a TTL of the session's MaxAge; the cookie holds
// only the session's id (random unless the caller sets Session.ID before
// the first Save). Saving a session with MaxAge < 0 deletes its key, so a
// logout is seen by every node at once. It pings Redis once.
//
// The store also has a method SessionExists(ctx, id) (bool, error), for
// callers that must confirm a session by id without its cookie (package
// web does for bearer tokens).
func NewRedisSessions(ctx context.Context, client *goredis.Client, o SessionOptions) (sessions.Store, error) {
	if client == nil {
		return nil, ErrNoRedis
	}
	s, err := redisstore.NewRedisStore(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("store: redis sessions: %w", err)
	}
	s.KeyPrefix(RedisKeyPrefix)
	s.Options(o.gorilla())
	return &redisSessions{RedisStore: s, client: client}, nil
}

// redisSessions is redisstore's store plus a lookup by id.
type redisSessions struct {
	*redisstore.RedisStore
	client *goredis.Client
}

var _ sessions.Store = (*redisSessions)(nil)

// SessionExists reports whether the session with this id is stored, i.e.
// has neither expired nor been logged out.
func (s *redisSessions) SessionExists(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	n, err := s.client.Exists(ctx, RedisKeyPrefix+id).Result()
	if err != nil {
		return false, fmt.Errorf("store: redis sessions: %w", err)
	}
	return n == 1, nil
}
