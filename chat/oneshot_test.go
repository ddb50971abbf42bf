package chat

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func oneShotCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// TestOneShotSend: a send by a user without a connection here reaches the
// room's members; its answer is the ack a connection would get, and a
// retry with the same ref returns the original and is not delivered again.
func TestOneShotSend(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	bob := connect(t, h, "bob")
	bob.join("lobby")
	ctx := context.Background()

	ack, err := h.Send(ctx, "alice", "lobby", "hi", "r1")
	if err != nil {
		t.Fatal(err)
	}
	var f frame
	if err := json.Unmarshal(ack.Frame, &f); err != nil {
		t.Fatalf("ack %s: %v", ack.Frame, err)
	}
	if f.Type != "message" || f.ID != ack.ID || f.From != "alice" || f.Text != "hi" || f.ref() != "r1" || f.Room != "lobby" {
		t.Fatalf("ack = %s (id %s)", ack.Frame, ack.ID)
	}
	got := bob.expect("message")
	if got.ID != ack.ID || got.ref() != "" {
		t.Fatalf("bob got %+v, want id %s without ref", got, ack.ID)
	}

	again, err := h.Send(ctx, "alice", "lobby", "hi", "r1")
	if err != nil || again.ID != ack.ID {
		t.Fatalf("retry: %v, id %s, want %s", err, again.ID, ack.ID)
	}
	bob.quiet("a second copy", isType("message"))

	// The WebSocket path is the same one: alice's frame with that ref,
	// from a connection, is acknowledged with the same message.
	a := connect(t, h, "alice")
	a.join("lobby")
	a.do(`{"type":"send","room":"lobby","text":"hi","ref":"r1"}`)
	if m := a.until("the ack", func(f frame) bool { return f.ref() == "r1" }); m.ID != ack.ID {
		t.Fatalf("frame retry acked %+v, want id %s", m, ack.ID)
	}
	bob.quiet("a second copy", isType("message"))
}

func TestOneShotDM(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	bob := connect(t, h, "bob")
	alice := connect(t, h, "alice")
	ack, err := h.DM(context.Background(), "alice", "bob", "psst", "d1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ack.Frame), `"type":"dm"`) || !strings.Contains(string(ack.Frame), `"ref":"d1"`) {
		t.Fatalf("ack frame %s", ack.Frame)
	}
	if f := bob.expect("dm"); f.From != "alice" || f.Text != "psst" {
		t.Fatalf("bob got %+v", f)
	}
	// The answer is the sender's copy, which alice's connections get.
	if f := alice.expect("dm"); f.ID != ack.ID || f.ref() != "" {
		t.Fatalf("alice's connection got %+v, want id %s", f, ack.ID)
	}
}

func TestOneShotValidation(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.MaxTextBytes = 10 })
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		do   func() error
		code string
	}{
		{"bad room", func() error { _, err := h.Send(ctx, "alice", "no room", "x", ""); return err }, CodeBadRoom},
		{"empty text", func() error { _, err := h.Send(ctx, "alice", "lobby", "  ", ""); return err }, CodeBadText},
		{"long text", func() error { _, err := h.Send(ctx, "alice", "lobby", "0123456789x", ""); return err }, CodeBadText},
		{"long ref", func() error { _, err := h.Send(ctx, "alice", "lobby", "x", strings.Repeat("r", 65)); return err }, CodeBadRef},
		{"bad recipient", func() error { _, err := h.DM(ctx, "alice", "b b", "x", ""); return err }, CodeBadName},
		{"bad typing room", func() error { return h.Typing(ctx, "alice", "") }, CodeBadRoom},
		{"bad sender", func() error { _, err := h.Send(ctx, "", "lobby", "x", ""); return err }, CodeBadName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := oneShotCode(tc.do()); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
		})
	}
}

// TestOneShotRateLimit: one-shot requests count against a limit per user
// with a connection's rate and burst; other users are not affected.
func TestOneShotRateLimit(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit, c.RateBurst = 0.001, 3 })
	ctx := context.Background()
	for i := range 3 {
		if err := h.Typing(ctx, "alice", "lobby"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, err := h.Send(ctx, "alice", "lobby", "x", ""); oneShotCode(err) != CodeRateLimited {
		t.Fatalf("over the burst: %v, want rate_limited", err)
	}
	if _, err := h.Send(ctx, "bob", "lobby", "x", ""); err != nil {
		t.Fatalf("another user: %v", err)
	}
}

// TestPostersForgetFullLimiters: the per-user limiters do not pile up;
// those that have filled up again are forgotten.
func TestPostersForgetFullLimiters(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHub(t, nil, "n1", func(c *Config) { c.Now = func() time.Time { return now } })
	for i := range limitsKeep {
		if !h.posters.allow(now, "u"+strconv.Itoa(i), h.rate, h.burst) {
			t.Fatal("refused a fresh user")
		}
	}
	now = now.Add(time.Minute)
	h.posters.allow(now, "late", h.rate, h.burst)
	if n := h.posters.len(); n != 1 {
		t.Fatalf("%d limiters kept, want only the new one", n)
	}
}
