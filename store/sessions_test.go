package store_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/store/redistest"
)

const name = "meshchat"

func key(b byte, n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// save stores values in a new session and returns the cookie set.
func save(t *testing.T, s sessions.Store, values map[any]any) *http.Cookie {
	t.Helper()
	r := httptest.NewRequest("POST", "/", nil)
	w := httptest.NewRecorder()
	sess, err := s.New(r, name)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range values {
		sess.Values[k] = v
	}
	if err := sess.Save(r, w); err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("%d cookies", len(cookies))
	}
	return cookies[0]
}

func load(t *testing.T, s sessions.Store, c *http.Cookie) *sessions.Session {
	t.Helper()
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(c)
	sess, err := s.New(r, name)
	if err != nil && !sess.IsNew {
		t.Fatal(err)
	}
	return sess
}

func checkCookie(t *testing.T, c *http.Cookie, maxAge int) {
	t.Helper()
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.MaxAge != maxAge {
		t.Fatalf("cookie %+v", c)
	}
}

func TestCookieStore(t *testing.T) {
	s1 := store.NewCookieStore(key(1, 32), key(2, 32), store.SessionOptions{MaxAge: time.Hour})
	c := save(t, s1, map[any]any{"user": "alice", "iat": int64(5)})
	checkCookie(t, c, 3600)
	if c.Secure {
		t.Fatal("Secure by default")
	}
	// Another node with the same keys reads it.
	s2 := store.NewCookieStore(key(1, 32), key(2, 32), store.SessionOptions{MaxAge: time.Hour})
	sess := load(t, s2, c)
	if sess.IsNew || sess.Values["user"] != "alice" || sess.Values["iat"] != int64(5) {
		t.Fatalf("session %+v", sess)
	}
	// Other keys do not.
	s3 := store.NewCookieStore(key(9, 32), key(2, 32), store.SessionOptions{})
	if sess := load(t, s3, c); !sess.IsNew || len(sess.Values) != 0 {
		t.Fatalf("foreign cookie accepted: %+v", sess.Values)
	}
	// Tampering is detected.
	bad := *c
	bad.Value = c.Value[:len(c.Value)-2] + "xx"
	if sess := load(t, s2, &bad); !sess.IsNew {
		t.Fatal("tampered cookie accepted")
	}
	// Defaults.
	c = save(t, store.NewCookieStore(key(1, 32), nil, store.SessionOptions{Secure: true}), map[any]any{"u": "x"})
	checkCookie(t, c, int(store.DefaultSessionMaxAge/time.Second))
	if !c.Secure {
		t.Fatal("Secure option ignored")
	}
}

func TestRedisSessions(t *testing.T) {
	srv := redistest.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()

	if _, err := store.NewRedisSessions(ctx, nil, store.SessionOptions{}); err == nil {
		t.Fatal("nil client accepted")
	}
	s, err := store.NewRedisSessions(ctx, client, store.SessionOptions{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := save(t, s, map[any]any{"user": "alice"})
	checkCookie(t, c, 3600)
	keys, err := client.Keys(ctx, store.RedisKeyPrefix+"*").Result()
	if err != nil || len(keys) != 1 || keys[0] != store.RedisKeyPrefix+c.Value {
		t.Fatalf("keys %v, %v", keys, err)
	}
	// Until a connection uses it, a new session's key lives briefly.
	if ttl := client.TTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > store.DefaultSessionFreshTTL {
		t.Fatalf("ttl of a new session %v, want at most %v", ttl, store.DefaultSessionFreshTTL)
	}

	// A second store (another node) on the same Redis sees the session.
	s2, err := store.NewRedisSessions(ctx, client, store.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sess := load(t, s2, c)
	if sess.IsNew || sess.Values["user"] != "alice" {
		t.Fatalf("session %+v", sess)
	}
	type confirmer interface {
		ConfirmSession(ctx context.Context, id string, until time.Time) (bool, error)
	}
	ex, ok := s2.(confirmer)
	if !ok {
		t.Fatal("redis sessions have no ConfirmSession")
	}
	// Confirming makes it live until the session's end.
	if ok, err := ex.ConfirmSession(ctx, c.Value, time.Now().Add(time.Hour)); !ok || err != nil {
		t.Fatalf("ConfirmSession before logout = %v, %v", ok, err)
	}
	if ttl := client.TTL(ctx, keys[0]).Val(); ttl <= 50*time.Minute || ttl > time.Hour {
		t.Fatalf("ttl of a confirmed session %v, want about an hour", ttl)
	}

	// MaxAge < 0 deletes the key: the cookie is dead everywhere.
	r := httptest.NewRequest("POST", "/", nil)
	r.AddCookie(c)
	sess, _ = s2.New(r, name)
	sess.Options.MaxAge = -1
	w := httptest.NewRecorder()
	if err := sess.Save(r, w); err != nil {
		t.Fatal(err)
	}
	if n := client.Exists(ctx, keys[0]).Val(); n != 0 {
		t.Fatal("key survived logout")
	}
	if ok, err := ex.ConfirmSession(ctx, c.Value, time.Now().Add(time.Hour)); ok || err != nil {
		t.Fatalf("ConfirmSession after logout = %v, %v", ok, err)
	}
	if sess := load(t, s, c); !sess.IsNew || len(sess.Values) != 0 {
		t.Fatalf("deleted session still loads: %+v", sess.Values)
	}

	// With Redis down the store is made (a node boots during an
	// outage), and a login fails until Redis is back.
	srv.Stop()
	s3, err := store.NewRedisSessions(ctx, client, store.SessionOptions{})
	if err != nil {
		t.Fatalf("NewRedisSessions with Redis down: %v", err)
	}
	r = httptest.NewRequest("POST", "/", nil)
	sess, _ = s3.New(r, name)
	sess.Values["user"] = "bob"
	if err := sess.Save(r, httptest.NewRecorder()); err == nil {
		t.Fatal("a session saved with Redis down")
	}
	srv.Restart()
	save(t, s3, map[any]any{"user": "bob"})
}

func TestRedisSessionsFreshTTL(t *testing.T) {
	srv := redistest.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	tests := []struct {
		name     string
		o        store.SessionOptions
		min, max time.Duration
	}{
		{"default", store.SessionOptions{}, time.Minute, store.DefaultSessionFreshTTL},
		{"set", store.SessionOptions{FreshTTL: 90 * time.Second}, time.Minute, 90 * time.Second},
		{"off", store.SessionOptions{FreshTTL: -1, MaxAge: 2 * time.Hour}, time.Hour, 2 * time.Hour},
		{"above MaxAge", store.SessionOptions{FreshTTL: 3 * time.Hour, MaxAge: 2 * time.Hour}, time.Hour, 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.NewRedisSessions(ctx, client, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			c := save(t, s, map[any]any{"user": "alice"})
			if ttl := client.TTL(ctx, store.RedisKeyPrefix+c.Value).Val(); ttl < tc.min || ttl > tc.max {
				t.Fatalf("ttl %v, want %v..%v", ttl, tc.min, tc.max)
			}
		})
	}
}
