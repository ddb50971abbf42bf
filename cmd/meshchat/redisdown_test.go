package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// A node of --broker redis boots while Redis is down (docs/redis.md):
// it stays up and not ready, refuses logins with a code, and serves
// once Redis comes, without a restart.
func TestRedisDownAtStart(t *testing.T) {
	srv := redistest.Reserve(t, redistest.Options{})
	p := startProc(t, "rd1", "", "--broker", "redis", "--redis", srv.URL())
	clustertest.WaitFor(t, 30*time.Second, "the node answers /healthz", func() bool {
		if !p.Running() {
			t.Fatalf("the node exited while Redis is down: %v", p.Err())
		}
		st, _ := webtest.Get(t, p.url+"/healthz", nil)
		return st == http.StatusOK
	})
	st, body := webtest.Get(t, p.url+"/readyz", nil)
	if st != http.StatusServiceUnavailable || !strings.Contains(string(body), "redis") {
		t.Errorf("/readyz while Redis is down: %d %s, want 503 naming redis", st, body)
	}
	if _, st, f := webtest.TryLogin(t, p.url, "alice"); st != http.StatusServiceUnavailable || f.ErrorCode() != "unavailable" {
		t.Errorf("login while Redis is down: %d %v, want 503 unavailable", st, f)
	}
	if !p.Running() {
		t.Fatalf("the node exited: %v", p.Err())
	}

	srv.Restart()
	webtest.WaitReady(t, 30*time.Second, p.url)
	alice, bob := webtest.Login(t, p.url, "alice"), webtest.Login(t, p.url, "bob")
	a, b := webtest.Dial(t, p.url, alice, webtest.DialOptions{}), webtest.Dial(t, p.url, bob, webtest.DialOptions{})
	a.Join("up")
	b.Join("up")
	a.Send(map[string]string{"type": "send", "room": "up", "text": "redis is back"})
	b.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == "redis is back" })
}
