package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshchat/meshchat/cluster/clustertest"
)

// TestMain fails the run when goroutines of this package or memberlist
// outlive the tests (memberlist's timers may take a moment to wind down).
func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m, "hashicorp/memberlist.") }

var testKey = bytes.Repeat([]byte{7}, KeySize)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("CLUSTER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// eventLog records events delivered to a subscriber.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(e Event) { l.mu.Lock(); l.evs = append(l.evs, e); l.mu.Unlock() }
func (l *eventLog) has(kind EventKind, name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if e.Kind == kind && e.Node.Name == name {
			return true
		}
	}
	return false
}

func startNode(t *testing.T, name, bind string, join []string, key []byte, mod func(*Config)) (*Cluster, *eventLog) {
	t.Helper()
	cfg := Config{
		Name:           name,
		BindAddr:       bind,
		HTTPURL:        "http://" + name + ".test:80",
		Join:           join,
		Key:            key,
		RejoinInterval: 200 * time.Millisecond,
		Logger:         testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := &eventLog{}
	c.Subscribe(log.add)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	clustertest.Cleanup(t, "shutdown "+name, c.Shutdown)
	return c, log
}

func stateOf(c *Cluster, name string) State {
	for _, n := range c.Members() {
		if n.Name == name {
			return n.State
		}
	}
	return ""
}

func aliveCount(c *Cluster) int { return len(c.Alive()) }

func threeNodes(t *testing.T) []*Cluster {
	a, _ := startNode(t, "a", "127.0.0.1:0", nil, testKey, nil)
	b, _ := startNode(t, "b", "127.0.0.1:0", []string{a.BindAddr()}, testKey, nil)
	c, _ := startNode(t, "c", "127.0.0.1:0", []string{a.BindAddr()}, testKey, nil)
	nodes := []*Cluster{a, b, c}
	clustertest.WaitFor(t, 10*time.Second, "3 alive members everywhere", func() bool {
		for _, n := range nodes {
			if aliveCount(n) != 3 {
				return false
			}
		}
		return true
	})
	return nodes
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Key: testKey}, "Name is required"},
		{"no key", Config{Name: "a"}, "Key must be 32 bytes"},
		{"short key", Config{Name: "a", Key: []byte("short")}, "Key must be 32 bytes"},
		{"bad bind", Config{Name: "a", Key: testKey, BindAddr: "nope"}, "BindAddr"},
		{"bad port", Config{Name: "a", Key: testKey, BindAddr: "127.0.0.1:x"}, "BindAddr"},
		{"bad advertise", Config{Name: "a", Key: testKey, AdvertiseAddr: "x"}, "AdvertiseAddr"},
		{"meta too big", Config{Name: "a", Key: testKey, Data: make([]byte, 600)}, "metadata"},
		{"label too long", Config{Name: "a", Key: testKey, Label: strings.Repeat("l", 256)}, "Label"},
		{"ok", Config{Name: "a", Key: testKey, BindAddr: "127.0.0.1:0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestJoinAndMetadata(t *testing.T) {
	nodes := threeNodes(t)
	for _, n := range nodes {
		if !n.Joined() {
			t.Errorf("%s: Joined() = false", n.cfg.Name)
		}
		peers := n.Alive()
		for i, want := range []string{"a", "b", "c"} {
			if peers[i].Name != want || peers[i].HTTP != "http://"+want+".test:80" {
				t.Errorf("%s: peer %d = %+v", n.cfg.Name, i, peers[i])
			}
		}
	}
	if got := nodes[1].LocalNode(); got.Name != "b" || got.HTTP != "http://b.test:80" || got.State != StateAlive {
		t.Errorf("LocalNode = %+v", got)
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	a, _ := startNode(t, "a", "127.0.0.1:0", nil, testKey, nil)
	other := bytes.Repeat([]byte{9}, KeySize)
	x, _ := startNode(t, "x", "127.0.0.1:0", nil, other, nil)
	// Join directly so the failure is observed, not inferred from silence.
	n, err := x.ml.Join([]string{a.BindAddr()})
	if n != 0 || err == nil {
		t.Fatalf("join with a wrong key: n=%d err=%v", n, err)
	}
	t.Logf("join refused: %v", err)
	if stateOf(a, "x") != "" || aliveCount(x) != 1 {
		t.Fatalf("node with a wrong key got in: a sees %v, x sees %v", a.Members(), x.Members())
	}
}

// TestOtherLabelCannotJoin: two clusters with the same key but other
// labels (--cluster-name) stay apart, whichever joins the other.
func TestOtherLabelCannotJoin(t *testing.T) {
	label := func(l string) func(*Config) { return func(c *Config) { c.Label = l } }
	a, _ := startNode(t, "a", "127.0.0.1:0", nil, testKey, label("blue"))
	x, _ := startNode(t, "x", "127.0.0.1:0", nil, testKey, label("green"))
	for _, p := range []struct{ from, to *Cluster }{{x, a}, {a, x}} {
		n, err := p.from.ml.Join([]string{p.to.BindAddr()})
		if n != 0 || err == nil {
			t.Fatalf("join across cluster names: n=%d err=%v", n, err)
		}
		t.Logf("join refused: %v", err)
	}
	if aliveCount(a) != 1 || aliveCount(x) != 1 {
		t.Fatalf("clusters with other names merged: a sees %v, x sees %v", a.Members(), x.Members())
	}
}

func TestAbruptShutdownDetectedDead(t *testing.T) {
	nodes := threeNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// How soon is a figure to log, not to assert: memberlist's probes
	// take about 5s on a quiet machine and longer on a loaded one.
	took := clustertest.WaitFor(t, 30*time.Second, "c dead on a and b", func() bool {
		return stateOf(nodes[0], "c") == StateDead && stateOf(nodes[1], "c") == StateDead
	})
	t.Logf("failure detected after %v", took)
	if aliveCount(nodes[0]) != 2 {
		t.Errorf("a alive = %v", nodes[0].Alive())
	}
}

func TestLeaveReportsLeft(t *testing.T) {
	nodes := threeNodes(t)
	var (
		mu   sync.Mutex
		left bool
	)
	nodes[0].Subscribe(func(e Event) {
		if e.Kind == EventLeave && e.Node.Name == "b" {
			mu.Lock()
			left = true
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if nodes[1].Joined() {
		t.Error("Joined() after Leave")
	}
	if err := nodes[1].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	took := clustertest.WaitFor(t, 5*time.Second, "b left on a and c", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return left && stateOf(nodes[0], "b") == StateLeft && stateOf(nodes[2], "b") == StateLeft
	})
	t.Logf("leave seen after %v", took)
}

func TestSeedStartingLater(t *testing.T) {
	port := clustertest.FreePort(t, true)
	seed := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	b, _ := startNode(t, "b", "127.0.0.1:0", []string{seed}, testKey, nil)
	if b.Joined() {
		t.Fatal("joined before the seed exists")
	}
	a, _ := startNode(t, "a", seed, nil, testKey, nil)
	clustertest.WaitFor(t, 10*time.Second, "b joined late seed", func() bool {
		return b.Joined() && aliveCount(a) == 2 && aliveCount(b) == 2
	})
}

// startPair starts a, then b joined through a (bMod adjusts b's config),
// and waits until both see two alive. It returns a's event log.
func startPair(t *testing.T, bMod func(*Config)) (a, b *Cluster, aEvents *eventLog) {
	t.Helper()
	a, aEvents = startNode(t, "a", "127.0.0.1:0", nil, testKey, nil)
	b, _ = startNode(t, "b", "127.0.0.1:0", []string{a.BindAddr()}, testKey, bMod)
	clustertest.WaitFor(t, 10*time.Second, "2 alive", func() bool { return aliveCount(a) == 2 && aliveCount(b) == 2 })
	return a, b, aEvents
}

// TestRejoinDeadPeer restarts a dead node without seeds: only the survivor's
// re-join loop can bring them back together, as after a partition heals.
func TestRejoinDeadPeer(t *testing.T) {
	a, b, events := startPair(t, nil)
	bAddr := b.BindAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, "b dead", func() bool { return stateOf(a, "b") == StateDead })
	clustertest.WaitFor(t, 2*time.Second, "dead event", func() bool { return events.has(EventDead, "b") })

	b2, _ := startNode(t, "b", bAddr, nil, testKey, nil)
	took := clustertest.WaitFor(t, 10*time.Second, "b back", func() bool {
		return stateOf(a, "b") == StateAlive && aliveCount(b2) == 2
	})
	t.Logf("merged after %v", took)
}

// TestRejoinLeftSeed is the README's recipe restarted: the seed a leaves
// gracefully and comes back at its address with no seeds of its own. The
// survivor b, which joined through a, must find it again; before, b only
// re-joined peers that died, and a stayed a cluster of one.
func TestRejoinLeftSeed(t *testing.T) {
	// memberlist itself gossips to departed nodes for a while
	// (GossipToTheDeadTime, 30s), which would find a again on its own
	// if it came back at once; a restart can take longer than that.
	const deadGossip = 100 * time.Millisecond
	a, b, _ := startPair(t, func(c *Config) {
		c.tune = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = deadGossip }
	})
	aAddr := a.BindAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, "a left on b", func() bool { return stateOf(b, "a") == StateLeft })
	time.Sleep(3 * deadGossip) // the restart takes longer than memberlist's own gossip to a

	a2, _ := startNode(t, "a", aAddr, nil, testKey, nil)
	took := clustertest.WaitFor(t, 10*time.Second, "a back in b's cluster", func() bool {
		return stateOf(b, "a") == StateAlive && aliveCount(a2) == 2
	})
	t.Logf("merged after %v", took)
}

// TestSeedListNamingItself: every node may be given the same seed list.
// A node ignores itself in it: alone in the list it is a cluster of one
// (joined, expecting no peers); with others it must join one of them.
func TestSeedListNamingItself(t *testing.T) {
	port := clustertest.FreePort(t, true)
	self := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	a, _ := startNode(t, "a", self, []string{self, net.JoinHostPort("localhost", fmt.Sprint(port))}, testKey, nil)
	if !a.Joined() || a.ExpectsPeers() {
		t.Fatalf("seeded with itself only: joined %v, expects peers %v; want a cluster of one", a.Joined(), a.ExpectsPeers())
	}
	other := clustertest.FreeAddr(t, true)
	bPort := clustertest.FreePort(t, true)
	bAddr := net.JoinHostPort("127.0.0.1", fmt.Sprint(bPort))
	b, _ := startNode(t, "b", bAddr, []string{bAddr, other}, testKey, nil)
	if b.Joined() || !b.ExpectsPeers() {
		t.Fatalf("seeded with itself and an absent peer: joined %v, expects peers %v; want not joined, expecting", b.Joined(), b.ExpectsPeers())
	}
	c, _ := startNode(t, "c", other, []string{a.BindAddr(), bAddr, other}, testKey, nil)
	clustertest.WaitFor(t, 10*time.Second, "three alive", func() bool {
		return b.Joined() && aliveCount(a) == 3 && aliveCount(b) == 3 && aliveCount(c) == 3
	})
}

func TestEventsCoalescedAndOrdered(t *testing.T) {
	a, events := startNode(t, "a", "127.0.0.1:0", nil, testKey, nil)
	startNode(t, "b", "127.0.0.1:0", []string{a.BindAddr()}, testKey, nil)
	clustertest.WaitFor(t, 5*time.Second, "join events", func() bool { return events.has(EventJoin, "a") && events.has(EventJoin, "b") })
	events.mu.Lock()
	defer events.mu.Unlock()
	joins := 0
	for _, e := range events.evs {
		if e.Kind == EventJoin && e.Node.Name == "b" {
			joins++
			if e.Node.HTTP != "http://b.test:80" {
				t.Errorf("event node = %+v", e.Node)
			}
		}
	}
	if joins != 1 {
		t.Errorf("b joined %d times, want 1", joins)
	}
}
