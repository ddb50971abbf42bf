package chat

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
)

// startHub starts a hub on broker b; both are shut down by t.Cleanup
// unless stop is called first.
func startHub(t *testing.T, b transport.Broker, node string, mod func(*Config)) (h *Hub, stop func()) {
	t.Helper()
	cfg := Config{Node: node, Broker: b}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	stop = func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("broker close: %v", err)
		}
	}
	t.Cleanup(stop)
	return h, stop
}

func smallBroker(t *testing.T, net *inproc.Network, node string, history int) *inproc.Broker {
	t.Helper()
	b, err := inproc.New(inproc.Config{Node: node, Network: net, HistorySize: history})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A logout stays honoured by nodes started later, and by a node restarted
// alone, however many logouts followed it: far more than s:revoked
// retains (50 here, standing in for the default 1000).
func TestRevocationOutlivesRetention(t *testing.T) {
	const retained, every, later = 50, 10, 1005
	net := inproc.NewNetwork()
	snap := func(c *Config) { c.RevocationSnapshotEvery = every }
	h1, stop1 := startHub(t, smallBroker(t, net, "n1", retained), "n1", snap)
	waitCond(t, "n1 loaded", h1.RevocationsLoaded)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	if err := h1.RevokeSession(ctx, "victim", until); err != nil {
		t.Fatal(err)
	}
	for i := range later {
		if err := h1.RevokeSession(ctx, fmt.Sprintf("s%d", i), until); err != nil {
			t.Fatal(err)
		}
	}

	h2, stop2 := startHub(t, smallBroker(t, net, "n2", retained), "n2", snap)
	waitCond(t, "n2 loaded", h2.RevocationsLoaded)
	for _, id := range []string{"victim", "s0", fmt.Sprintf("s%d", later-1)} {
		if !h2.SessionRevoked(id) {
			t.Errorf("node started later accepts logged-out session %s", id)
		}
	}
	if live, _ := h2.RevocationStats(); live != later+1 {
		t.Errorf("node started later knows %d revocations, want %d", live, later+1)
	}

	// Snapshots are not published by every node for every revocation:
	// about one per `every` revocations.
	res, err := h2.broker.History(ctx, revokedChannel, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snaps := 0
	for _, p := range res.Publications {
		if ev, _ := decodeEvent(p.Data); ev.Kind == kindRevokeSnapshot {
			snaps++
		}
	}
	if snaps == 0 || snaps > 2*retained/every {
		t.Errorf("%d snapshot publications among the last %d", snaps, len(res.Publications))
	}

	// Every node stops and one starts again (same network: the retained
	// history survives, as with --data or Redis).
	stop1()
	stop2()
	h3, _ := startHub(t, smallBroker(t, net, "n3", retained), "n3", snap)
	waitCond(t, "n3 loaded", h3.RevocationsLoaded)
	if !h3.SessionRevoked("victim") {
		t.Fatal("restarted node accepts logged-out session")
	}
}

// Between every-th revocations, a snapshot still comes within the
// interval; with a history age limit it is republished so that live
// revocations never age out.
func TestRevocationSnapshotInterval(t *testing.T) {
	net := inproc.NewNetwork()
	h, _ := startHub(t, smallBroker(t, net, "n1", 0), "n1", func(c *Config) {
		c.RevocationSnapshotInterval = time.Hour
		c.HistoryMaxAge = 40 * time.Millisecond // interval becomes 20ms
	})
	if h.rev.interval != 20*time.Millisecond {
		t.Fatalf("interval %v, want HistoryMaxAge/2", h.rev.interval)
	}
	waitCond(t, "loaded", h.RevocationsLoaded)
	if err := h.RevokeSession(context.Background(), "x", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		res, err := h.broker.History(context.Background(), revokedChannel, transport.HistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range res.Publications {
			if ev, _ := decodeEvent(p.Data); ev.Kind == kindRevokeSnapshot && ev.Revoked["x"] > 0 {
				n++
			}
		}
		return n
	}
	// Two: the one for the new revocation, then a republication that
	// keeps it inside the age limit.
	waitCond(t, "two snapshots", func() bool { return count() >= 2 })
}

func TestRevocationCapAndPrune(t *testing.T) {
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	net := inproc.NewNetwork()
	h, _ := startHub(t, smallBroker(t, net, "n1", 0), "n1", func(c *Config) {
		c.MaxRevocations = 3
		c.RevocationSnapshotInterval = 20 * time.Millisecond // the sweep runs every 5ms
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	h.rev.insert(h, "a", ms(3*time.Hour))
	h.rev.insert(h, "b", ms(time.Hour)) // closest to expiry
	h.rev.insert(h, "c", ms(2*time.Hour))
	h.rev.insert(h, "d", ms(4*time.Hour))
	if live, dropped := h.RevocationStats(); live != 3 || dropped != 1 {
		t.Fatalf("live %d dropped %d, want 3 and 1", live, dropped)
	}
	if h.SessionRevoked("b") || !h.SessionRevoked("a") || !h.SessionRevoked("d") {
		t.Fatal("the wrong revocation was forgotten")
	}
	// Expired ones make room before anything live is forgotten.
	clock.Store(now.Add(150 * time.Minute).UnixNano()) // "c" has expired
	h.rev.insert(h, "e", ms(5*time.Hour))
	if live, dropped := h.RevocationStats(); live != 3 || dropped != 1 {
		t.Fatalf("live %d dropped %d, want 3 and 1", live, dropped)
	}
	// And the timer sweeps them.
	clock.Store(now.Add(10 * time.Hour).UnixNano())
	waitCond(t, "expired revocations pruned", func() bool {
		live, _ := h.RevocationStats()
		return live == 0
	})
}

// historyGate fails History until allowed.
type historyGate struct {
	*inproc.Broker
	allow atomic.Bool
}

func (f *historyGate) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	if !f.allow.Load() {
		return transport.HistoryResult{}, errors.New("history unavailable")
	}
	return f.Broker.History(ctx, ch, req)
}

func TestRevocationsLoaded(t *testing.T) {
	net := inproc.NewNetwork()
	h1, _ := startHub(t, smallBroker(t, net, "n1", 0), "n1", nil)
	waitCond(t, "n1 loaded", h1.RevocationsLoaded)
	if err := h1.RevokeSession(context.Background(), "gone", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	fb := &historyGate{Broker: smallBroker(t, net, "n2", 0)}
	h2, _ := startHub(t, fb, "n2", nil)
	// Delivered live while loading: kept, and applied once loaded.
	if err := h1.RevokeSession(context.Background(), "live", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h2.RevocationsLoaded() {
		t.Fatal("loaded without history")
	}
	fb.allow.Store(true)
	waitCond(t, "n2 loaded", h2.RevocationsLoaded)
	if !h2.SessionRevoked("gone") || !h2.SessionRevoked("live") {
		t.Fatal("revocations missing after load")
	}
}

// Frames the web layer rejects (too large, binary) count against the
// rate limit like any other.
func TestRejectIsRateLimited(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit = 0.001; c.RateBurst = 2 })
	tc := connect(t, h, "alice")
	for range 3 {
		if err := tc.c.Reject(CodeTooLarge, "too large"); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{CodeTooLarge, CodeTooLarge, CodeRateLimited} {
		if f := tc.expect("error"); f.Code != want {
			t.Fatalf("got %+v, want code %s", f, want)
		}
	}
	tc.do(`{"type":"ping"}`)
	if f := tc.expect("error"); f.Code != CodeRateLimited {
		t.Fatalf("got %+v, want rate_limited", f)
	}
}
