package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// TestDebugListener: --debug-addr serves the profiler on its own
// listener, and the public one never does.
func TestDebugListener(t *testing.T) {
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.DebugAddr = "127.0.0.1:0"
	n := nodetest.Start(t, cfg)
	if n.DebugAddr() == "" {
		t.Fatal("no debug address with --debug-addr set")
	}
	get := func(url string) (int, string) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("http://" + n.DebugAddr() + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("profiler index: %d %.200q", code, body)
	}
	if code, body := get("http://" + n.DebugAddr() + "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.200q", code, body)
	}
	// The command line may carry --secret.
	if code, body := get("http://" + n.DebugAddr() + "/debug/pprof/cmdline"); strings.Contains(body, "meshchat") || strings.Contains(body, nodetest.Secret) {
		t.Errorf("cmdline served: %d %.200q", code, body)
	}
	if code, _ := get(n.URL() + "/debug/pprof/"); code == http.StatusOK {
		t.Error("the public listener serves the profiler")
	}

	off := nodetest.Start(t, nodetest.Config(t, "n2", "mesh", ""))
	if off.DebugAddr() != "" {
		t.Errorf("debug listener %s without --debug-addr", off.DebugAddr())
	}
}

// TestNodeWithoutSecret: the README's first command gives no secret; the
// node still serves, with a secret of its own.
func TestNodeWithoutSecret(t *testing.T) {
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.Secret = ""
	n := nodetest.Start(t, cfg)
	webtest.WaitReady(t, 10*time.Second, n.URL())
	s := webtest.Login(t, n.URL(), "alice")
	if st, body := s.Do(t, http.MethodGet, n.URL()+"/api/me"); st != http.StatusOK {
		t.Fatalf("/api/me on a node without --secret: %d %s", st, body)
	}
}
