package chat

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meshchat/meshchat/transport"
)

// observations counts what an Observer was given.
type observations struct{ n atomic.Int64 }

func (o *observations) Observe(float64) { o.n.Add(1) }

var _ transport.Observer = (*observations)(nil)

// TestStatsCount: each counter moves with the event it counts, and only
// with it.
func TestStatsCount(t *testing.T) {
	var obs observations
	h := newHub(t, nil, "n1", func(c *Config) { c.PublishSeconds = &obs; c.RateLimit = 1; c.RateBurst = 8 })
	alice, bob := connect(t, h, "alice"), connect(t, h, "bob")
	alice.join("general")
	bob.join("general")
	alice.do(`{"type":"send","room":"general","text":"hi","ref":"a1"}`)
	alice.until("own message", isType("message"))
	bob.until("alice's message", isType("message"))
	alice.do(`{"type":"dm","to":"bob","text":"psst"}`)
	bob.until("dm", isType("dm"))
	alice.do(`{"type":"send","room":"nowhere","text":"hi"}`)
	alice.until("not_joined", func(f frame) bool { return f.Code == CodeNotJoined })
	alice.do(`{"type":"join","room":"bad room"}`)
	alice.until("bad_room", func(f frame) bool { return f.Code == CodeBadRoom })
	if err := alice.c.Reject(CodeTooLarge, "too large"); err != nil {
		t.Fatal(err)
	}
	alice.until("too_large", func(f frame) bool { return f.Code == CodeTooLarge })
	// Alice's burst of 8 is spent: the next frames are rate limited.
	for range 4 {
		alice.do(`{"type":"ping"}`)
	}
	alice.until("rate_limited", func(f frame) bool { return f.Code == CodeRateLimited })

	s := h.Stats()
	for what, got := range map[string]uint64{
		"published": s.Published, "dms": s.DMs,
		"not_joined": s.Rejected[CodeNotJoined], "bad_room": s.Rejected[CodeBadRoom], "too_large": s.Rejected[CodeTooLarge],
	} {
		if got != 1 {
			t.Errorf("%s = %d, want 1", what, got)
		}
	}
	if s.Joins != 2 {
		t.Errorf("joins = %d, want 2", s.Joins)
	}
	// The message reached two connections, the DM its recipient and
	// the sender's own inbox.
	if s.Deliveries != 4 {
		t.Errorf("deliveries = %d, want 4", s.Deliveries)
	}
	if s.RateLimited == 0 || s.RateLimited != s.Rejected[CodeRateLimited] {
		t.Errorf("rate limited = %d, rejected[rate_limited] = %d", s.RateLimited, s.Rejected[CodeRateLimited])
	}
	// One message and two DM copies (the recipient's and the sender's).
	if n := obs.n.Load(); n != 3 {
		t.Errorf("publish latency observed %d times, want 3", n)
	}
	if s.Closes[CloseNormal] != 0 {
		t.Errorf("closes before any close: %v", s.Closes)
	}
	_ = bob.c.Close(context.Background())
	if s := h.Stats(); s.Closes[CloseNormal] != 1 {
		t.Errorf("closes after bob's close: %v", s.Closes)
	}
}

// TestStatsSlowConsumer: a slow consumer counts once, as a close with its
// code, and the bytes it had queued are reported until then.
func TestStatsSlowConsumer(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.QueueBytes = 4096; c.RateLimit = NoRateLimit })
	fast, slow := connect(t, h, "fast"), connect(t, h, "slow")
	slow.join("general")
	fast.join("general")
	text := strings.Repeat("x", 200)
	fast.do(`{"type":"send","room":"general","text":"%s"}`, text)
	fast.until("message", isType("message"))
	if q := h.QueuedBytes(); q < len(text) {
		t.Errorf("queued bytes = %d with a message waiting for the slow reader", q)
	}
	for i := 0; i < 100 && !slow.c.isClosed(); i++ {
		fast.do(`{"type":"send","room":"general","text":"%s"}`, text)
		fast.until("message", isType("message"))
	}
	slow.disconnected("slow consumer")
	if got := h.SlowConsumers(); len(got) != 1 || got[0].User != "slow" || got[0].Conn != slow.c.ID() || got[0].At.IsZero() {
		t.Errorf("slow consumers logged: %+v", got)
	}
	s := h.Stats()
	if s.SlowConsumers != 1 || s.Closes[CloseSlowConsumer] != 1 {
		t.Errorf("slow consumers = %d, closes = %v", s.SlowConsumers, s.Closes)
	}
	_ = slow.c.Close(context.Background())
	if s := h.Stats(); s.SlowConsumers != 1 || s.Closes[CloseNormal] != 0 {
		t.Errorf("closing a disconnected client counted again: %v", s.Closes)
	}
}

// TestStatsUnlistedCodes: codes the hub does not list are counted as
// other, so that a label never takes an unbounded value.
func TestStatsUnlistedCodes(t *testing.T) {
	h := &Hub{}
	h.stats.reject("made_up")
	h.stats.closed(4999)
	h.stats.brokerError("presence")
	s := h.Stats()
	if s.Rejected[OtherCode] != 1 || s.Closes[OtherClose] != 1 {
		t.Errorf("rejected %v closes %v", s.Rejected, s.Closes)
	}
	if len(s.Rejected) != len(statCodes) || len(s.BrokerErrors) != len(statBrokerOps) {
		t.Errorf("labels grew: %v %v", s.Rejected, s.BrokerErrors)
	}
}

// TestSlowLogKeepsTheLatest: the log of slow consumers is bounded and
// lists the newest first.
func TestSlowLogKeepsTheLatest(t *testing.T) {
	h := &Hub{}
	if got := h.SlowConsumers(); len(got) != 0 {
		t.Fatalf("empty log lists %+v", got)
	}
	for i := range SlowLogSize + 5 {
		h.slow.add(SlowConsumer{User: fmt.Sprint("u", i)})
	}
	got := h.SlowConsumers()
	if len(got) != SlowLogSize {
		t.Fatalf("%d kept, want %d", len(got), SlowLogSize)
	}
	if first, last := got[0].User, got[len(got)-1].User; first != fmt.Sprint("u", SlowLogSize+4) || last != "u5" {
		t.Errorf("newest %s, oldest %s", first, last)
	}
}
