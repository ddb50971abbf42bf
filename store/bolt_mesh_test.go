package store_test

// The mesh broker with Bolt history logs. These tests live here because
// transport/* may not import store, even in tests.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/mesh"
)

var meshKey = bytes.Repeat([]byte("k"), 32)

// meshNode is one mesh broker with its Bolt log and HTTP server.
type meshNode struct {
	name   string
	broker *mesh.Broker
	log    *store.Bolt
	srv    *httptest.Server
	rec    *brokertest.Recorder

	closeOnce sync.Once
	closeErr  error
}

// stop closes the broker, then its log (the order cmd uses), then the
// server. Safe to call twice.
func (n *meshNode) stop() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := n.broker.Close(ctx)
		if lerr := n.log.Close(); err == nil {
			err = lerr
		}
		n.srv.CloseClientConnections()
		n.srv.Close()
		n.closeErr = err
	})
	return n.closeErr
}

// meshCluster is a static membership the test can shrink, standing in for
// the cluster package.
type meshCluster struct {
	mu    sync.Mutex
	peers []transport.Peer
	nodes []*meshNode
}

func (c *meshCluster) alive() []transport.Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.peers)
}

func (c *meshCluster) remove(name string) {
	c.mu.Lock()
	c.peers = slices.DeleteFunc(c.peers, func(p transport.Peer) bool { return p.Name == name })
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	for _, n := range nodes {
		if n.name != name {
			n.broker.PeersChanged()
		}
	}
}

// newMeshCluster builds one unstarted mesh broker per directory, named
// n0, n1, ... in order, each with a Bolt log in its directory. The same
// directories give the same names, as a restarted cluster would have.
func newMeshCluster(tb testing.TB, dirs []string, opts store.BoltOptions) *meshCluster {
	tb.Helper()
	c := &meshCluster{}
	for i, dir := range dirs {
		var h atomic.Pointer[http.Handler]
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hp := h.Load(); hp != nil {
				(*hp).ServeHTTP(w, r)
				return
			}
			http.NotFound(w, r)
		}))
		log, err := store.OpenBolt(filepath.Join(dir, "history.db"), opts)
		if err != nil {
			srv.Close()
			tb.Fatal(err)
		}
		self := transport.Peer{Name: "n" + strconv.Itoa(i), Addr: srv.URL}
		b, err := mesh.New(mesh.Config{
			Self:          self,
			Key:           meshKey,
			Peers:         c.alive,
			HistorySize:   opts.HistorySize,
			HistoryMaxAge: opts.HistoryMaxAge,
			DedupeWindow:  opts.DedupeWindow,
			Log:           log,
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			log.Close()
			srv.Close()
			tb.Fatal(err)
		}
		var handler http.Handler = b.Handler()
		h.Store(&handler)
		n := &meshNode{name: self.Name, broker: b, log: log, srv: srv}
		tb.Cleanup(func() {
			if err := n.stop(); err != nil {
				tb.Errorf("stop %s: %v", n.name, err)
			}
		})
		c.peers = append(c.peers, self)
		c.nodes = append(c.nodes, n)
	}
	return c
}

func (c *meshCluster) start(tb testing.TB) {
	tb.Helper()
	for _, n := range c.nodes {
		n.rec = brokertest.NewRecorder()
		if err := n.broker.Start(context.Background(), n.rec); err != nil {
			tb.Fatal(err)
		}
	}
}

// closingBroker reports its Close to the membership, as cmd does, so the
// rest of the cluster carries on (the suite's Close test expects that).
type closingBroker struct {
	*mesh.Broker
	c    *meshCluster
	node *meshNode
}

func (b closingBroker) Close(ctx context.Context) error {
	err := b.node.stop()
	b.c.remove(b.node.name)
	return err
}

func testDirs(t testing.TB, n int) []string {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	return dirs
}

func TestMeshBoltConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, n int) []transport.Broker {
		c := newMeshCluster(t, testDirs(t, n), store.BoltOptions{HistorySize: brokertest.HistorySize})
		out := make([]transport.Broker, n)
		for i, nd := range c.nodes {
			out[i] = closingBroker{nd.broker, c, nd}
		}
		return out
	})
}

// TestMeshBoltRestartAll publishes on a 3-node cluster, closes every node,
// starts them again from their directories (new ports, same names) and
// checks that each channel continues where it stopped: same epoch, next
// offset, recoverable from a position taken before the restart, and with
// its idempotency keys.
func TestMeshBoltRestartAll(t *testing.T) {
	brokertest.VerifyNoLeaks(t)
	opts := store.BoltOptions{HistorySize: 50}
	dirs := testDirs(t, 3)
	ctx := t.Context()

	c := newMeshCluster(t, dirs, opts)
	c.start(t)
	// Enough channels that every node owns and backs up some.
	chans := make([]string, 12)
	for i := range chans {
		chans[i] = "r:restart" + strconv.Itoa(i)
	}
	type mark struct {
		first, last transport.Publication
	}
	before := map[string]mark{}
	for i, ch := range chans {
		var m mark
		for j := range 5 {
			p, err := c.nodes[(i+j)%3].broker.Publish(ctx, ch, []byte(ch+"/"+strconv.Itoa(j)), transport.PublishOptions{IdempotencyKey: ch + "-k" + strconv.Itoa(j)})
			if err != nil {
				t.Fatal(err)
			}
			if j == 0 {
				m.first = p
			}
			m.last = p
		}
		before[ch] = m
	}
	for _, n := range c.nodes {
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
	}

	c = newMeshCluster(t, dirs, opts)
	c.start(t)
	for i, ch := range chans {
		m := before[ch]
		nd := c.nodes[i%3]
		if err := nd.broker.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		since := transport.StreamPosition{Offset: 2, Epoch: m.last.Epoch}
		res, err := nd.broker.History(ctx, ch, transport.HistoryRequest{Since: &since})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Recovered || res.Latest != (transport.StreamPosition{Offset: 5, Epoch: m.last.Epoch}) || !slices.Equal(offsetsOf(res.Publications), []uint64{3, 4, 5}) {
			t.Fatalf("%s: history since 2 after restart: recovered=%v latest=%+v offsets=%v; before: %+v", ch, res.Recovered, res.Latest, offsetsOf(res.Publications), m.last)
		}
		if got := string(res.Publications[2].Data); got != ch+"/4" {
			t.Fatalf("%s: offset 5 holds %q", ch, got)
		}
		// A retry of a publish acknowledged before the restart is still
		// recognised.
		again, err := c.nodes[(i+1)%3].broker.Publish(ctx, ch, []byte(ch+"/0"), transport.PublishOptions{IdempotencyKey: ch + "-k0"})
		if err != nil {
			t.Fatal(err)
		}
		if again.Offset != m.first.Offset || again.Epoch != m.first.Epoch {
			t.Fatalf("%s: retried key after restart got offset %d in %s, want %d in %s", ch, again.Offset, again.Epoch, m.first.Offset, m.first.Epoch)
		}
		p, err := c.nodes[(i+2)%3].broker.Publish(ctx, ch, []byte(ch+"/after"), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Epoch != m.last.Epoch || p.Offset != 6 {
			t.Fatalf("%s: first publish after restart: offset %d in %s, want 6 in %s", ch, p.Offset, p.Epoch, m.last.Epoch)
		}
		got := nd.rec.WaitN(t, ch, 1)
		if got[0].Offset != 6 || got[0].Epoch != m.last.Epoch {
			t.Fatalf("%s: delivered %+v after restart", ch, got[0])
		}
		all, err := nd.broker.History(ctx, ch, transport.HistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(offsetsOf(all.Publications), []uint64{1, 2, 3, 4, 5, 6}) {
			t.Fatalf("%s: history after restart %v", ch, offsetsOf(all.Publications))
		}
	}
}

// TestMeshBoltRetentionSurvivesRestart: the count limit holds across a
// restart, and history that rolled past the limit reports not recovered
// for a position before it.
func TestMeshBoltRetentionSurvivesRestart(t *testing.T) {
	opts := store.BoltOptions{HistorySize: 5}
	dirs := testDirs(t, 2)
	ctx := t.Context()
	c := newMeshCluster(t, dirs, opts)
	c.start(t)
	var last transport.Publication
	for j := range 12 {
		p, err := c.nodes[j%2].broker.Publish(ctx, "r:roll", []byte(strconv.Itoa(j)), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	for _, n := range c.nodes {
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
	}
	c = newMeshCluster(t, dirs, opts)
	c.start(t)
	res, err := c.nodes[0].broker.History(ctx, "r:roll", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 2, Epoch: last.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || !slices.Equal(offsetsOf(res.Publications), []uint64{8, 9, 10, 11, 12}) || res.Latest.Epoch != last.Epoch {
		t.Fatalf("after restart: recovered=%v offsets=%v latest=%+v", res.Recovered, offsetsOf(res.Publications), res.Latest)
	}
}

func offsetsOf(pubs []transport.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Offset
	}
	return out
}

// BenchmarkMeshBoltPublishDeliver is brokertest.Bench on two mesh nodes
// with Bolt logs: a stored publish is fsynced by the owner and by the
// backup before it is acknowledged.
func BenchmarkMeshBoltPublishDeliver(b *testing.B) {
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker {
		c := newMeshCluster(b, testDirs(b, n), store.BoltOptions{HistorySize: brokertest.HistorySize})
		out := make([]transport.Broker, n)
		for i, nd := range c.nodes {
			out[i] = nd.broker
		}
		return out
	})
}
