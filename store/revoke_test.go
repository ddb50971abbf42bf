package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/inproc"
	"github.com/meshchat/meshchat/transport/redis"
)

// revNode is one node's revocation record on its own broker, wired as
// the node wires it (the record handles the broker's deliveries, here
// without a hub in between), with the sessions it was told to
// disconnect.
type revNode struct {
	*Revocations
	stop func()

	mu   sync.Mutex
	gone map[string]bool // sessions disconnected
}

func (n *revNode) disconnected(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gone[id]
}

// startRevocations starts broker b and a record on it; both are shut
// down by t.Cleanup unless stop is called first.
func startRevocations(t *testing.T, b transport.Broker, node string, mod func(*RevocationConfig)) *revNode {
	t.Helper()
	cfg := RevocationConfig{Node: node, Broker: b}
	if mod != nil {
		mod(&cfg)
	}
	rv, err := NewRevocations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &revNode{Revocations: rv, gone: map[string]bool{}}
	ctx := context.Background()
	if err := b.Start(ctx, rv); err != nil {
		t.Fatal(err)
	}
	err = rv.Start(ctx, func(id string) {
		n.mu.Lock()
		n.gone[id] = true
		n.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	n.stop = func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("broker close: %v", err)
		}
	}
	t.Cleanup(n.stop)
	return n
}

// smallBroker is an inproc broker on net retaining history publications
// per channel (0: the default).
func smallBroker(t *testing.T, net *inproc.Network, node string, history int) *inproc.Broker {
	t.Helper()
	b, err := inproc.New(inproc.Config{Node: node, Network: net, HistorySize: history})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// live reports whether revocations reach n: it publishes a probe
// revocation and checks that it arrived.
func (n *revNode) live() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	id := "probe-" + n.log.node
	if n.Revoked(id) {
		return true
	}
	ev := logEvent{Kind: kindRevoke, Session: id, Until: time.Now().Add(time.Hour).UnixMilli()}
	_, _ = n.log.broker.Publish(ctx, RevokedChannel, ev.marshal(), transport.PublishOptions{})
	return n.Revoked(id)
}

func TestRevokeSession(t *testing.T) {
	net := inproc.NewNetwork()
	n1, n2 := startRevocations(t, smallBroker(t, net, "n1", 0), "n1", nil), startRevocations(t, smallBroker(t, net, "n2", 0), "n2", nil)
	// n2 loads revocations in the background; wait until it listens.
	brokertest.Eventually(t, "n2 subscribed to revocations", n2.live)
	if err := n1.revoke(context.Background(), "sess1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !n1.Revoked("sess1") || !n1.disconnected("sess1") {
		t.Fatal("not revoked locally")
	}
	brokertest.Eventually(t, "revocation on n2", func() bool { return n2.Revoked("sess1") })
	// n2 closes the session's connections (chat.Hub.DisconnectSession).
	brokertest.Eventually(t, "sess1 disconnected on n2", func() bool { return n2.disconnected("sess1") })
	if n2.disconnected("sess2") || n2.Revoked("sess2") {
		t.Fatal("other session affected")
	}
	// Expired revocations do not matter; a node started later loads the
	// retained ones.
	if err := n1.revoke(context.Background(), "old", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	n3 := startRevocations(t, smallBroker(t, net, "n3", 0), "n3", nil)
	brokertest.Eventually(t, "revocation loaded on n3", func() bool { return n3.Revoked("sess1") })
	if n3.Revoked("old") {
		t.Fatal("expired revocation counted")
	}
	if err := n1.revoke(context.Background(), "", time.Now().Add(time.Hour)); !errors.Is(err, ErrEmptySession) {
		t.Fatalf("empty session: %v", err)
	}
}

// Revocations travel between two nodes sharing a real Redis, where
// delivery is asynchronous (unlike inproc).
func TestRevocationsWithRedisBroker(t *testing.T) {
	srv := redistest.Start(t)
	node := func(name string) *revNode {
		b, err := redis.New(redis.Config{URL: srv.URL(), Node: name, Alive: func() []string { return []string{"n1", "n2"} }})
		if err != nil {
			t.Fatal(err)
		}
		return startRevocations(t, b, name, nil)
	}
	n1, n2 := node("n1"), node("n2")
	if err := n1.revoke(context.Background(), "s1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "revocation on n2", func() bool { return n2.Revoked("s1") })
}

// A logout stays honoured by nodes started later, and by a node restarted
// alone, however many logouts followed it: far more than s:revoked
// retains (50 here, standing in for the default 1000).
func TestRevocationOutlivesRetention(t *testing.T) {
	const retained, every, later = 50, 10, 1005
	net := inproc.NewNetwork()
	snap := func(c *RevocationConfig) { c.SnapshotEvery = every }
	n1 := startRevocations(t, smallBroker(t, net, "n1", retained), "n1", snap)
	brokertest.Eventually(t, "n1 loaded", n1.Loaded)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	if err := n1.revoke(ctx, "victim", until); err != nil {
		t.Fatal(err)
	}
	for i := range later {
		if err := n1.revoke(ctx, fmt.Sprintf("s%d", i), until); err != nil {
			t.Fatal(err)
		}
	}

	n2 := startRevocations(t, smallBroker(t, net, "n2", retained), "n2", snap)
	brokertest.Eventually(t, "n2 loaded", n2.Loaded)
	for _, id := range []string{"victim", "s0", fmt.Sprintf("s%d", later-1)} {
		if !n2.Revoked(id) {
			t.Errorf("node started later accepts logged-out session %s", id)
		}
	}
	if live, _ := n2.Stats(); live != later+1 {
		t.Errorf("node started later knows %d revocations, want %d", live, later+1)
	}

	// Snapshots are not published by every node for every revocation:
	// about one per `every` revocations.
	res, err := n2.log.broker.History(ctx, RevokedChannel, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snaps := 0
	for _, p := range res.Publications {
		if ev, _ := decodeLogEvent(p.Data); ev.Kind == kindRevokeSnapshot {
			snaps++
		}
	}
	if snaps == 0 || snaps > 2*retained/every {
		t.Errorf("%d snapshot publications among the last %d", snaps, len(res.Publications))
	}

	// Every node stops and one starts again (same network: the retained
	// history survives, as with --data or Redis).
	n1.stop()
	n2.stop()
	n3 := startRevocations(t, smallBroker(t, net, "n3", retained), "n3", snap)
	brokertest.Eventually(t, "n3 loaded", n3.Loaded)
	if !n3.Revoked("victim") {
		t.Fatal("restarted node accepts logged-out session")
	}
}

// Between every-th revocations, a snapshot still comes within the
// interval; with a history age limit it is republished so that live
// revocations never age out.
func TestRevocationSnapshotInterval(t *testing.T) {
	net := inproc.NewNetwork()
	n := startRevocations(t, smallBroker(t, net, "n1", 0), "n1", func(c *RevocationConfig) {
		c.SnapshotInterval = time.Hour
		c.HistoryMaxAge = 40 * time.Millisecond // interval becomes 20ms
	})
	if n.log.interval != 20*time.Millisecond {
		t.Fatalf("interval %v, want HistoryMaxAge/2", n.log.interval)
	}
	brokertest.Eventually(t, "loaded", n.Loaded)
	if err := n.revoke(context.Background(), "x", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		res, err := n.log.broker.History(context.Background(), RevokedChannel, transport.HistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		c := 0
		for _, p := range res.Publications {
			if ev, _ := decodeLogEvent(p.Data); ev.Kind == kindRevokeSnapshot && slices.ContainsFunc(ev.Records, func(r revRecord) bool { return r.Session == "x" }) {
				c++
			}
		}
		return c
	}
	// Two: the one for the new revocation, then a republication that
	// keeps it inside the age limit.
	brokertest.Eventually(t, "two snapshots", func() bool { return count() >= 2 })
}

func TestRevocationCapAndPrune(t *testing.T) {
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	net := inproc.NewNetwork()
	n := startRevocations(t, smallBroker(t, net, "n1", 0), "n1", func(c *RevocationConfig) {
		c.MaxRevocations = 3
		c.SnapshotInterval = 20 * time.Millisecond // the sweep runs every 5ms
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	n.insert("a", ms(3*time.Hour))
	n.insert("b", ms(time.Hour)) // closest to expiry
	n.insert("c", ms(2*time.Hour))
	n.insert("d", ms(4*time.Hour))
	if live, dropped := n.Stats(); live != 3 || dropped != 1 {
		t.Fatalf("live %d dropped %d, want 3 and 1", live, dropped)
	}
	if n.Revoked("b") || !n.Revoked("a") || !n.Revoked("d") {
		t.Fatal("the wrong revocation was forgotten")
	}
	// Expired ones make room before anything live is forgotten.
	clock.Store(now.Add(150 * time.Minute).UnixNano()) // "c" has expired
	n.insert("e", ms(5*time.Hour))
	if live, dropped := n.Stats(); live != 3 || dropped != 1 {
		t.Fatalf("live %d dropped %d, want 3 and 1", live, dropped)
	}
	// And the timer sweeps them.
	clock.Store(now.Add(10 * time.Hour).UnixNano())
	brokertest.Eventually(t, "expired revocations pruned", func() bool {
		live, _ := n.Stats()
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
	n1 := startRevocations(t, smallBroker(t, net, "n1", 0), "n1", nil)
	brokertest.Eventually(t, "n1 loaded", n1.Loaded)
	if err := n1.revoke(context.Background(), "gone", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	fb := &historyGate{Broker: smallBroker(t, net, "n2", 0)}
	n2 := startRevocations(t, fb, "n2", nil)
	// Delivered live while loading: kept, and applied once loaded.
	if err := n1.revoke(context.Background(), "live", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n2.Loaded() {
		t.Fatal("loaded without history")
	}
	fb.allow.Store(true)
	brokertest.Eventually(t, "n2 loaded", n2.Loaded)
	if !n2.Revoked("gone") || !n2.Revoked("live") {
		t.Fatal("revocations missing after load")
	}
	// Both are news to n2: their sessions' connections there close.
	if !n2.disconnected("gone") || !n2.disconnected("live") {
		t.Fatal("sessions revoked while loading not disconnected")
	}
}

func TestNewRevocationsValidates(t *testing.T) {
	b := smallBroker(t, nil, "n1", 0)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	for _, tt := range []struct {
		name string
		cfg  RevocationConfig
		want error
	}{
		{"no node", RevocationConfig{Broker: b}, ErrRevocationsNoNode},
		{"no broker", RevocationConfig{Node: "n1"}, ErrRevocationsNoBroker},
		{"negative", RevocationConfig{Node: "n1", Broker: b, MaxRevocations: -1}, ErrRevocationsNegative},
	} {
		if _, err := NewRevocations(tt.cfg); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	rv, err := NewRevocations(RevocationConfig{Node: "n1", Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if rv.log.every != DefaultRevocationSnapshotEvery || rv.log.interval != DefaultRevocationSnapshotInterval || rv.t.max != DefaultMaxRevocations || rv.t.perUser != DefaultMaxRevocationsPerUser {
		t.Fatalf("defaults: every %d interval %v max %d", rv.log.every, rv.log.interval, rv.t.max)
	}
}

// insert records one revocation on this node alone, of a user of its
// own.
func (n *revNode) insert(id string, until int64) {
	n.log.mu.Lock()
	defer n.log.mu.Unlock()
	n.insertLocked(&logEvent{Session: id, User: "u-" + id, Issued: n.log.now().UnixMilli(), Until: until}, n.log.now())
}

// revoke logs session id out, a user's only session.
func (n *revNode) revoke(ctx context.Context, id string, until time.Time) error {
	return n.Revoke(ctx, Session{ID: id, User: "u-" + id, Issued: time.Now(), Until: until})
}

// With a retention below the default snapshot cadence (--history 20 and
// no explicit SnapshotEvery), a node started later still knows every
// logout: snapshots come often enough for what the channel keeps.
func TestRevocationsFollowSmallRetention(t *testing.T) {
	const retained = 20
	net := inproc.NewNetwork()
	small := func(c *RevocationConfig) { c.HistorySize = retained }
	n1 := startRevocations(t, smallBroker(t, net, "n1", retained), "n1", small)
	brokertest.Eventually(t, "loaded", n1.Loaded)
	ctx := context.Background()
	for i := range 200 {
		if err := n1.revoke(ctx, fmt.Sprintf("s%d", i), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	n2 := startRevocations(t, smallBroker(t, net, "n2", retained), "n2", small)
	brokertest.Eventually(t, "n2 loaded", n2.Loaded)
	for i := range 200 {
		if !n2.Revoked(fmt.Sprintf("s%d", i)) {
			t.Fatalf("a node started later forgot logout s%d of 200 (retention %d)", i, retained)
		}
	}
}

// One user's flood of logouts (anonymous logins under --auth open cost
// nothing) pushes no other user's logout out of a full table: the
// flooder's sessions fold into one record that still revokes each of
// them, and a node started later knows the same.
func TestRevocationFloodKeepsOthersLogouts(t *testing.T) {
	for _, tt := range []struct {
		name    string
		perUser int // K; a large one leaves the full table to fold
	}{
		{"per-user bound", 0},
		{"full table", 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const max, flood = 50, 300
			net := inproc.NewNetwork()
			small := func(c *RevocationConfig) { c.MaxRevocations, c.MaxPerUser = max, tt.perUser }
			n1 := startRevocations(t, smallBroker(t, net, "n1", 0), "n1", small)
			brokertest.Eventually(t, "n1 loaded", n1.Loaded)
			ctx := context.Background()
			now := time.Now()
			// The victim's logout expires before any of the flood's:
			// the oldest goes first was the old rule.
			victim := Session{ID: "victim", User: "bob", Issued: now.Add(-time.Minute), Until: now.Add(time.Hour)}
			if err := n1.Revoke(ctx, victim); err != nil {
				t.Fatal(err)
			}
			var sessions []Session
			for i := range flood {
				s := Session{ID: fmt.Sprintf("m%d", i), User: "mallory", Issued: now.Add(time.Duration(i) * time.Millisecond), Until: now.Add(2 * time.Hour)}
				sessions = append(sessions, s)
				if err := n1.Revoke(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			n2 := startRevocations(t, smallBroker(t, net, "n2", 0), "n2", small)
			brokertest.Eventually(t, "n2 loaded", n2.Loaded)
			for _, n := range []*revNode{n1, n2} {
				if !n.SessionRevoked(victim) || !n.Revoked("victim") {
					t.Fatalf("%s: another user's logout was pushed out by a flood", n.log.node)
				}
				for _, s := range sessions {
					if !n.SessionRevoked(s) {
						t.Fatalf("%s: flooded session %s accepted again", n.log.node, s.ID)
					}
				}
				if live, dropped := n.Stats(); live > max || dropped != 0 {
					t.Errorf("%s: %d records (max %d), %d dropped", n.log.node, live, max, dropped)
				}
			}
			// A session of the flooder's issued after the folded ones is
			// not revoked by the fold.
			later := Session{ID: "fresh", User: "mallory", Issued: now.Add(time.Hour)}
			if n1.SessionRevoked(later) {
				t.Fatal("a fold revokes a session issued after every folded one")
			}
		})
	}
}

// When every user has a single logout and the table is full, the one
// closest to expiry goes, and only one.
func TestRevocationTableSingles(t *testing.T) {
	tb := newRevTable(3, 2)
	now := time.Now().UnixMilli()
	for i, until := range []int64{now + 300, now + 100, now + 200, now + 400} {
		tb.insert(fmt.Sprintf("s%d", i), fmt.Sprintf("u%d", i), now, until, now)
	}
	if tb.len() != 3 || tb.dropped != 1 || tb.revoked("s1", now) {
		t.Fatalf("len %d dropped %d, s1 kept %v", tb.len(), tb.dropped, tb.revoked("s1", now))
	}
	// A user over K keeps its newest session exactly and folds the rest.
	tb = newRevTable(100, 2)
	for i := range 3 {
		tb.insert(fmt.Sprintf("s%d", i), "u", now+int64(i), now+1000, now)
	}
	u := tb.users["u"]
	if len(u.sessions) != 1 || u.sessions["s2"] == nil || u.fold == nil || u.fold.issued != now+1 || tb.len() != 2 {
		t.Fatalf("after a fold: sessions %v fold %+v len %d", u.sessions, u.fold, tb.len())
	}
	if !tb.covers("u", now, now) || tb.covers("u", now+2, now) || !tb.revoked("s2", now) {
		t.Fatal("fold covers the wrong sessions")
	}
	// Expiry prunes folds and users alike.
	if n := tb.prune(now + 1000); n != 2 || tb.len() != 0 || len(tb.users) != 0 || len(tb.crowded.s) != 0 {
		t.Fatalf("pruned %d, left %d records, %d users", n, tb.len(), len(tb.users))
	}
}

// BenchmarkRevocationInsertFull inserts into a full table of the default
// size: every insertion first makes room.
func BenchmarkRevocationInsertFull(b *testing.B) {
	for _, bc := range []struct {
		name  string
		users int // distinct users the revocations spread over
	}{
		{"singles", DefaultMaxRevocations},
		{"one-flooder", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tb := newRevTable(DefaultMaxRevocations, DefaultMaxRevocationsPerUser)
			now := time.Now().UnixMilli()
			for i := range DefaultMaxRevocations {
				tb.insert(fmt.Sprintf("fill%d", i), fmt.Sprintf("u%d", i), now, now+int64(time.Hour/time.Millisecond)+int64(i), now)
			}
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = fmt.Sprintf("new%d", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tb.insert(ids[i], fmt.Sprintf("x%d", i%bc.users), now+int64(i), now+int64(2*time.Hour/time.Millisecond), now)
			}
		})
	}
}
