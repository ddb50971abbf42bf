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

// DefaultSessionFreshTTL is how long a session stored in Redis lives
// until a connection first uses it, unless configured.
const DefaultSessionFreshTTL = 10 * time.Minute

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
	// FreshTTL is how long a new session kept in Redis lives until
	// ConfirmSession first extends it to the session's end: a login
	// that never opens a connection leaves no key for MaxAge. Default
	// DefaultSessionFreshTTL (10 minutes); negative stores new sessions
	// for MaxAge at once. The cookie store ignores it.
	FreshTTL time.Duration
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
// RedisKeyPrefix; the cookie holds only the session's id (random unless
// the caller sets Session.ID before the first Save). A new session's key
// lives SessionOptions.FreshTTL, until ConfirmSession extends it to the
// session's end (the cookie says MaxAge from the start). Saving a session
// with MaxAge < 0 deletes its key, so a logout is seen by every node at
// once. It does not contact Redis: a node starts while Redis is down, and
// the store works once Redis answers.
//
// The store also has a method ConfirmSession(ctx, id, until) (bool,
// error), for callers that must confirm a session by id without its
// cookie (package web does for bearer tokens and tickets) or that start
// using it (a connection).
func NewRedisSessions(ctx context.Context, client *goredis.Client, o SessionOptions) (sessions.Store, error) {
	if client == nil {
		return nil, ErrNoRedis
	}
	// NewRedisStore pings Redis and reports a failure, but the store it
	// returns works regardless: the client dials on each command. A
	// cancelled context keeps the ping from waiting on a Redis that is
	// down.
	off, cancel := context.WithCancel(ctx)
	cancel()
	s, _ := redisstore.NewRedisStore(off, client)
	s.KeyPrefix(RedisKeyPrefix)
	opts := o.gorilla()
	s.Options(opts)
	fresh := o.FreshTTL
	if fresh == 0 {
		fresh = DefaultSessionFreshTTL
	}
	if fresh >= time.Duration(opts.MaxAge)*time.Second {
		fresh = -1
	}
	return &redisSessions{RedisStore: s, client: client, fresh: fresh}, nil
}

// redisSessions is redisstore's store plus a short life for new sessions
// and a lookup by id.
type redisSessions struct {
	*redisstore.RedisStore
	client *goredis.Client
	fresh  time.Duration // TTL of a new session's key; negative: none
}

var _ sessions.Store = (*redisSessions)(nil)

// Get returns the request's session, made by New, from the request's
// registry.
func (s *redisSessions) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New loads the request's session as redisstore does; the session saves
// through this store.
func (s *redisSessions) New(r *http.Request, name string) (*sessions.Session, error) {
	in, err := s.RedisStore.New(r, name)
	sess := sessions.NewSession(s, name)
	sess.ID, sess.Values, sess.Options, sess.IsNew = in.ID, in.Values, in.Options, in.IsNew
	return sess, err
}

// Save stores the session (see redisstore) and gives a new one's key
// the fresh TTL.
func (s *redisSessions) Save(r *http.Request, w http.ResponseWriter, sess *sessions.Session) error {
	if err := s.RedisStore.Save(r, w, sess); err != nil {
		return err
	}
	if !sess.IsNew || sess.Options.MaxAge <= 0 || s.fresh < 0 {
		return nil
	}
	if err := s.client.Expire(r.Context(), RedisKeyPrefix+sess.ID, s.fresh).Err(); err != nil {
		return fmt.Errorf("store: redis sessions: %w", err)
	}
	return nil
}

// ConfirmSession reports whether the session with this id is stored,
// i.e. has neither expired nor been logged out, and makes it live until
// until (the session's end), in one command.
func (s *redisSessions) ConfirmSession(ctx context.Context, id string, until time.Time) (bool, error) {
	if id == "" {
		return false, nil
	}
	ok, err := s.client.ExpireAt(ctx, RedisKeyPrefix+id, until).Result()
	if err != nil {
		return false, fmt.Errorf("store: redis sessions: %w", err)
	}
	return ok, nil
}
