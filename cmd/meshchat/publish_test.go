package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// TestPublishCommand runs `meshchat publish` against a real node: the
// message reaches a WebSocket client with the id the command printed.
func TestPublishCommand(t *testing.T) {
	const key = "publish-test-key-0123456789"
	cfg := nodetest.Config(t, "p1", "mesh", "")
	cfg.APIKey = key
	n := nodetest.Start(t, cfg)
	webtest.WaitReady(t, 10*time.Second, n.URL())
	bob := webtest.Dial(t, n.URL(), webtest.Login(t, n.URL(), "bob"), webtest.DialOptions{})
	bob.Join("news")

	publish := func(env map[string]string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), func() {}, append([]string{"publish"}, args...), &out, &errOut, envMap(env))
		return code, strings.TrimSpace(out.String()), errOut.String()
	}
	code, id, stderr := publish(map[string]string{"MESHCHAT_API_KEY": key},
		"--url", n.URL()+"/", "--room", "news", "--from", "deploy-bot", "v2.1", "is", "out")
	if code != 0 || id == "" {
		t.Fatalf("publish: exit %d, id %q, stderr %s", code, id, stderr)
	}
	f := bob.Expect("message", 10*time.Second, nil)
	if f.Str("id") != id || f.Str("from") != "deploy-bot" || f.Str("text") != "v2.1 is out" {
		t.Fatalf("bob got %v, want id %s", f, id)
	}

	// The same --ref again: acknowledged with the original id.
	var first string
	for range 2 {
		code, got, stderr := publish(nil, "--url", n.URL(), "--api-key", key, "--room", "news", "--from", "cron", "--ref", "nightly-1", "done")
		if code != 0 {
			t.Fatalf("publish with ref: exit %d, %s", code, stderr)
		}
		if first == "" {
			first = got
		} else if got != first {
			t.Fatalf("repeat with the same ref: id %s, want %s", got, first)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong key", []string{"--api-key", "nope", "--room", "news", "--from", "bot", "hi"}, "unauthorized"},
		{"bad room", []string{"--api-key", key, "--room", "no room", "--from", "bot", "hi"}, "bad_room"},
		{"bad sender", []string{"--api-key", key, "--room", "news", "--from", "b/ot", "hi"}, "bad_name"},
		{"blank text", []string{"--api-key", key, "--room", "news", "--from", "bot", " "}, "bad_text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := publish(nil, append([]string{"--url", n.URL()}, tc.args...)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want 1 and %q", code, stderr, tc.want)
			}
		})
	}
}
