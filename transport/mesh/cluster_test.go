package mesh

// The test harness of the package: an in-process cluster of mesh brokers
// on httptest servers, with a membership the test controls, optionally
// with a Bolt history log per node.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

var testKey = bytes.Repeat([]byte("k"), 32)

func testLogger() *slog.Logger {
	if os.Getenv("MESH_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testCluster is a static membership the test can change, standing in for
// the cluster package: removing a node updates the list and calls
// PeersChanged on the others, as cmd does on a membership event.
type testCluster struct {
	mu      sync.Mutex
	peers   []transport.Peer
	brokers map[string]*Broker
	servers map[string]*httptest.Server
	// logs holds a node's history log, when it has one (newBoltCluster).
	logs map[string]*Bolt
	// views, when set for a node, is what its Config.Peers returns instead
	// of peers: a node whose gossip has not caught up yet.
	views map[string][]string
	// departed are the nodes that left gracefully (Config.Departed).
	departed []string
}

// departedNodes is every node's Config.Departed.
func (c *testCluster) departedNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.departed)
}

// leave drops a node from the membership as one that left gracefully,
// which loses its vote at once (remove is a death: the vote stays).
func (c *testCluster) leave(name string) {
	c.mu.Lock()
	c.departed = append(c.departed, name)
	c.mu.Unlock()
	c.remove(name)
}

// peersOf is node name's Config.Peers.
func (c *testCluster) peersOf(name string) func() []transport.Peer {
	return func() []transport.Peer {
		c.mu.Lock()
		defer c.mu.Unlock()
		view, ok := c.views[name]
		if !ok {
			return slices.Clone(c.peers)
		}
		var out []transport.Peer
		for _, p := range c.peers {
			if slices.Contains(view, p.Name) {
				out = append(out, p)
			}
		}
		return out
	}
}

// setView makes node name see only the given nodes (nil: the whole
// membership again) and tells its broker, as cmd does on an event.
func (c *testCluster) setView(name string, view []string) {
	c.mu.Lock()
	if c.views == nil {
		c.views = make(map[string][]string)
	}
	if view == nil {
		delete(c.views, name)
	} else {
		c.views[name] = view
	}
	b := c.brokers[name]
	c.mu.Unlock()
	b.PeersChanged()
}

// remove drops a node from the membership and tells the others.
func (c *testCluster) remove(name string) {
	c.mu.Lock()
	c.peers = slices.DeleteFunc(c.peers, func(p transport.Peer) bool { return p.Name == name })
	var others []*Broker
	for n, b := range c.brokers {
		if n != name {
			others = append(others, b)
		}
	}
	c.mu.Unlock()
	for _, b := range others {
		b.PeersChanged()
	}
}

// kill stops a node abruptly: its HTTP server and its broker go away
// (then its history log, which must be released before it reopens).
func (c *testCluster) kill(tb testing.TB, name string) {
	c.mu.Lock()
	srv, b, log := c.servers[name], c.brokers[name], c.logs[name]
	c.mu.Unlock()
	srv.CloseClientConnections()
	srv.Close()
	if err := b.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if log != nil {
		if err := log.Close(); err != nil {
			tb.Fatal(err)
		}
	}
}

// stop stops a node gracefully, in the order cmd uses: its broker, then
// its history log, then its HTTP server. Safe to call twice (the test's
// cleanup does it again).
func (c *testCluster) stop(ctx context.Context, name string) error {
	c.mu.Lock()
	srv, b, log := c.servers[name], c.brokers[name], c.logs[name]
	c.mu.Unlock()
	err := b.Close(ctx)
	if log != nil {
		if lerr := log.Close(); err == nil {
			err = lerr
		}
	}
	srv.CloseClientConnections()
	srv.Close()
	return err
}

// newTestCluster starts n HTTP servers and builds one unstarted mesh
// broker behind each.
func newTestCluster(tb testing.TB, n int, mod func(i int, cfg *Config)) (*testCluster, []*Broker) {
	tb.Helper()
	c := &testCluster{brokers: make(map[string]*Broker), servers: make(map[string]*httptest.Server), logs: make(map[string]*Bolt)}
	brokers := make([]*Broker, n)
	for i := range n {
		var h atomic.Pointer[http.Handler]
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hp := h.Load(); hp != nil {
				(*hp).ServeHTTP(w, r)
				return
			}
			http.NotFound(w, r)
		}))
		tb.Cleanup(srv.Close)
		name := "n" + strconv.Itoa(i)
		cfg := Config{
			Self:        transport.Peer{Name: name, Addr: srv.URL},
			Key:         testKey,
			Peers:       c.peersOf(name),
			Departed:    c.departedNodes,
			HistorySize: brokertest.HistorySize,
			Logger:      testLogger(),
		}
		if mod != nil {
			mod(i, &cfg)
		}
		b, err := New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle(MountPath, b.Handler())
		var handler http.Handler = mux
		h.Store(&handler)
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Close(ctx); err != nil {
				tb.Errorf("close %s: %v", name, err)
			}
		})
		c.peers = append(c.peers, cfg.Self)
		c.brokers[name] = b
		c.servers[name] = srv
		brokers[i] = b
	}
	return c, brokers
}

// newBoltCluster is newTestCluster with a Bolt history log per node, in
// dirs[i], with opts; the brokers get the same retention. The same
// directories give the same node names, as a restarted cluster would
// have. mod, when set, runs after that.
func newBoltCluster(tb testing.TB, dirs []string, opts BoltOptions, mod func(i int, cfg *Config)) (*testCluster, []*Broker) {
	tb.Helper()
	logs := make([]*Bolt, len(dirs))
	c, bs := newTestCluster(tb, len(dirs), func(i int, cfg *Config) {
		log, err := OpenBolt(filepath.Join(dirs[i], "history.db"), opts)
		if err != nil {
			tb.Fatal(err)
		}
		// Registered before the broker's close, so it runs after it.
		tb.Cleanup(func() {
			if err := log.Close(); err != nil {
				tb.Errorf("close history log of %s: %v", cfg.Self.Name, err)
			}
		})
		logs[i] = log
		cfg.HistorySize, cfg.HistoryMaxAge, cfg.DedupeWindow = opts.HistorySize, opts.HistoryMaxAge, opts.DedupeWindow
		cfg.Log = log
		if mod != nil {
			mod(i, cfg)
		}
	})
	c.mu.Lock()
	for i, b := range bs {
		c.logs[b.cfg.Self.Name] = logs[i]
	}
	c.mu.Unlock()
	return c, bs
}

func testDirs(tb testing.TB, n int) []string {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = tb.TempDir()
	}
	return dirs
}

// closingBroker stops its node on Close and reports it to the membership,
// as cmd does, so the rest of the cluster moves its channels elsewhere
// (the suite's Close test expects the others to carry on).
type closingBroker struct {
	*Broker
	c *testCluster
}

func (b closingBroker) Close(ctx context.Context) error {
	err := b.c.stop(ctx, b.cfg.Self.Name)
	b.c.leave(b.cfg.Self.Name)
	return err
}

// asBrokers returns bs as the suite's factories do; with closing set, each
// stops its node and leaves the membership on Close.
func asBrokers(c *testCluster, bs []*Broker, closing bool) []transport.Broker {
	out := make([]transport.Broker, len(bs))
	for i, b := range bs {
		if closing {
			out[i] = closingBroker{b, c}
		} else {
			out[i] = b
		}
	}
	return out
}

// startOnChannel starts every broker of bs, finds a channel that bs[0]
// owns and subscribes the nodes subs to it. It returns the recorders, the
// channel and the index of its backup.
func startOnChannel(t *testing.T, bs []*Broker, subs ...int) ([]*brokertest.Recorder, string, int) {
	t.Helper()
	recs := brokertest.StartAll(t, bs...)
	ch, backup := channelOwnedBy(t, bs, 0)
	subscribe(t, bs, ch, subs...)
	return recs, ch, backup
}

// subscribe subscribes the nodes subs of bs to ch.
func subscribe(t *testing.T, bs []*Broker, ch string, subs ...int) {
	t.Helper()
	for _, i := range subs {
		if err := bs[i].Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
}

// channelOwnedBy finds a channel name whose owner (over all of bs) is
// bs[owner], and returns it with its backup's index.
func channelOwnedBy(t testing.TB, bs []*Broker, owner int) (string, int) {
	t.Helper()
	for i := range 10000 {
		ch := fmt.Sprintf("r:failover%d", i)
		o, bk, _ := bs[0].ranked(ch)
		if o.Name == bs[owner].cfg.Self.Name {
			for j, b := range bs {
				if b.cfg.Self.Name == bk.Name {
					return ch, j
				}
			}
		}
	}
	t.Fatal("no channel found")
	return "", 0
}

// publishRetrying publishes with an idempotency key, retrying while the
// broker answers ErrUnavailable, as the hub's clients do. Every attempt
// must return within bound.
func publishRetrying(ctx context.Context, t *testing.T, b *Broker, ch, key string, bound time.Duration) (transport.Publication, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, bound/2)
		start := time.Now()
		p, err := b.Publish(actx, ch, []byte(key), transport.PublishOptions{IdempotencyKey: key})
		took := time.Since(start)
		cancel()
		if took > bound {
			t.Errorf("publish %s on %s took %v (err %v), want at most %v", key, b.cfg.Self.Name, took, err, bound)
		}
		if err == nil || !errors.Is(err, transport.ErrUnavailable) || ctx.Err() != nil {
			return p, err
		}
	}
}

// publishLoad is concurrent publishers on ch (startPublishers) and what
// they have had acknowledged.
type publishLoad struct {
	wg        sync.WaitGroup
	published atomic.Int64 // acknowledged so far
	mu        sync.Mutex
	acked     map[string]transport.Publication // by key
}

// startPublishers starts workers publishers on each node nodes[k] of bs.
// Each publishes each publications on ch with publishRetrying (every
// attempt bounded by 3s), keyed "n<node>-<worker>-<j>", the key being the
// payload too. before, when set, runs before a publisher on node i
// publishes its j-th.
func startPublishers(t *testing.T, bs []*Broker, ch string, nodes []int, workers, each int, before func(i, j int)) *publishLoad {
	ctx := t.Context()
	l := &publishLoad{acked: make(map[string]transport.Publication)}
	for _, i := range nodes {
		for w := range workers {
			l.wg.Go(func() {
				for j := range each {
					if before != nil {
						before(i, j)
					}
					key := fmt.Sprintf("n%d-%d-%d", i, w, j)
					p, err := publishRetrying(ctx, t, bs[i], ch, key, 3*time.Second)
					if err != nil {
						t.Errorf("publish %s: %v", key, err)
						return
					}
					l.mu.Lock()
					l.acked[key] = p
					l.mu.Unlock()
					l.published.Add(1)
				}
			})
		}
	}
	return l
}

// wait waits for every publisher and returns what was acknowledged. A
// publisher's failure ends the test.
func (l *publishLoad) wait(t *testing.T) map[string]transport.Publication {
	t.Helper()
	l.wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return l.acked
}

// checkOneStream verifies that history, as every node reads it, is one
// stream 1..n in one epoch holding each acked publication exactly once,
// and that every recorder delivered exactly that stream.
func checkOneStream(t *testing.T, bs []*Broker, recs []*brokertest.Recorder, subs []int, ch string, acked map[string]transport.Publication) {
	t.Helper()
	ctx := t.Context()
	var ref transport.HistoryResult
	for i, b := range bs {
		res, err := b.History(ctx, ch, transport.HistoryRequest{})
		if err != nil {
			t.Fatalf("history from %s: %v", b.cfg.Self.Name, err)
		}
		if i == 0 {
			ref = res
			continue
		}
		if res.Latest != ref.Latest || !slices.EqualFunc(res.Publications, ref.Publications, samePub) {
			t.Fatalf("%s reads another stream: %v in %s, %s reads %v in %s", b.cfg.Self.Name, brokertest.Offsets(res.Publications), res.Latest.Epoch,
				bs[0].cfg.Self.Name, brokertest.Offsets(ref.Publications), ref.Latest.Epoch)
		}
	}
	if got, want := brokertest.Offsets(ref.Publications), brokertest.Seq(1, uint64(len(acked))); !slices.Equal(got, want) {
		t.Fatalf("history offsets %v, want 1..%d (one per acked publication)", got, len(acked))
	}
	seen := make(map[string]bool)
	for _, p := range ref.Publications {
		key := string(p.Data)
		a, ok := acked[key]
		if !ok || seen[key] {
			t.Fatalf("history holds %q at %d: acked %v, seen before %v", key, p.Offset, ok, seen[key])
		}
		seen[key] = true
		if a.Offset != p.Offset || a.Epoch != p.Epoch {
			t.Fatalf("%q was acked as %d in %s but is %d in %s", key, a.Offset, a.Epoch, p.Offset, p.Epoch)
		}
	}
	for _, i := range subs {
		got := recs[i].WaitN(t, ch, len(ref.Publications))
		if !slices.EqualFunc(got, ref.Publications, samePub) {
			t.Fatalf("n%d delivered %v, history is %v", i, brokertest.Offsets(got), brokertest.Offsets(ref.Publications))
		}
	}
}

// samePub reports whether a and b are one publication: offset, epoch and
// payload.
func samePub(a, b transport.Publication) bool {
	return a.Offset == b.Offset && a.Epoch == b.Epoch && bytes.Equal(a.Data, b.Data)
}
