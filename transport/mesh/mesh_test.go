package mesh

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, n int) []transport.Broker {
		c, bs := newTestCluster(t, n, nil)
		return asBrokers(c, bs, true)
	})
}

func BenchmarkPublishDeliver(b *testing.B) {
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker {
		c, bs := newTestCluster(b, n, nil)
		return asBrokers(c, bs, false)
	})
}

func TestFailoverKeepsEpochAndOffsets(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	survivors := []int{1, 2}
	recs, ch, backup := startOnChannel(t, bs, survivors...)
	ctx := t.Context()
	var first transport.Publication
	for i := range 10 {
		p, err := bs[survivors[i%2]].Publish(ctx, ch, []byte("before"+strconv.Itoa(i)), transport.PublishOptions{IdempotencyKey: "k" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = p
		}
	}
	for _, i := range survivors {
		recs[i].WaitN(t, ch, 10)
	}
	t.Logf("owner n0, backup n%d; killing the owner", backup)

	c.kill(t, "n0")
	c.remove("n0")

	// A retried publish from before the failure is still deduplicated:
	// the backup replicated the idempotency keys.
	again, err := bs[1].Publish(ctx, ch, []byte("before0"), transport.PublishOptions{IdempotencyKey: "k0"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Offset != first.Offset || again.Epoch != first.Epoch {
		t.Fatalf("retried key after failover got %+v, first was %+v", again, first)
	}
	for i := range 10 {
		p, err := bs[survivors[i%2]].Publish(ctx, ch, []byte("after"+strconv.Itoa(i)), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Epoch != first.Epoch || p.Offset != uint64(11+i) {
			t.Fatalf("publish after failover: offset %d epoch %s, want %d in %s", p.Offset, p.Epoch, 11+i, first.Epoch)
		}
	}
	res, err := bs[2].History(ctx, ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := brokertest.Offsets(res.Publications); !slices.Equal(got, brokertest.Seq(1, 20)) || res.Latest.Epoch != first.Epoch {
		t.Fatalf("history after failover: %v in %s", got, res.Latest.Epoch)
	}
	for _, i := range survivors {
		got := recs[i].WaitN(t, ch, 20)
		if !slices.Equal(brokertest.Offsets(got), brokertest.Seq(1, 20)) {
			t.Fatalf("n%d delivered %v, want 1..20 once each", i, brokertest.Offsets(got))
		}
	}
}

// TestFailoverWithoutReplicaStartsNewEpoch loses both the owner and the
// backup: the stream cannot be continued, so a new epoch starts.
func TestFailoverWithoutReplicaStartsNewEpoch(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	_, ch, backup := startOnChannel(t, bs)
	ctx := t.Context()
	other := 3 - backup
	p1, err := bs[other].Publish(ctx, ch, []byte("x"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Both leave the membership as nodes that left (two deaths of three
	// would leave the survivor without the quorum), without handing
	// anything over.
	for _, n := range []string{"n0", bs[backup].cfg.Self.Name} {
		c.kill(t, n)
		c.leave(n)
	}
	p2, err := bs[other].Publish(ctx, ch, []byte("y"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p2.Epoch == p1.Epoch || p2.Offset != 1 {
		t.Fatalf("after losing every copy: %+v (before: %+v), want offset 1 in a new epoch", p2, p1)
	}
	res, err := bs[other].History(ctx, ch, transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 1, Epoch: p1.Epoch}})
	if err != nil || res.Recovered {
		t.Fatalf("history since the lost epoch: %+v, %v; want not recovered", res, err)
	}
}

func TestPublishToUnreachableOwnerFails(t *testing.T) {
	c, bs := newTestCluster(t, 2, nil)
	_, ch, _ := startOnChannel(t, bs)
	c.kill(t, "n0") // still listed as alive: membership has not noticed yet
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := bs[1].Publish(ctx, ch, []byte("x"), transport.PublishOptions{}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish to a dead owner: %v, want ErrUnavailable", err)
	}
}

func TestBadKeyRejected(t *testing.T) {
	other := bytes.Repeat([]byte("x"), 32)
	_, bs := newTestCluster(t, 2, func(i int, cfg *Config) {
		if i == 1 {
			cfg.Key = other
		}
	})
	_, ch, _ := startOnChannel(t, bs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := bs[1].Publish(ctx, ch, []byte("x"), transport.PublishOptions{}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish with a wrong key: %v, want ErrUnavailable", err)
	}
}

func TestAuthenticate(t *testing.T) {
	_, bs := newTestCluster(t, 1, nil)
	b := bs[0]
	now := time.Now().UnixMilli()
	signAs := func(key []byte, cluster, from, to string, ts int64, nonce string) http.Header {
		signer := &Broker{cfg: Config{Key: key, ClusterName: cluster}}
		t := strconv.FormatInt(ts, 10)
		return http.Header{
			hdrFrom: {from}, hdrTo: {to}, hdrTime: {t}, hdrNonce: {nonce},
			hdrSig: {signer.mac("dial", from, to, t, nonce)},
		}
	}
	sign := func(key []byte, from, to string, ts int64, nonce string) http.Header {
		return signAs(key, "", from, to, ts, nonce)
	}
	tests := []struct {
		name string
		h    http.Header
		ok   bool
	}{
		{"good", sign(testKey, "peer", "n0", now, "0123456789abcdef0"), true},
		{"replayed nonce", sign(testKey, "peer", "n0", now, "0123456789abcdef0"), false},
		{"wrong key", sign(bytes.Repeat([]byte("x"), 32), "peer", "n0", now, "0123456789abcdef1"), false},
		{"stale", sign(testKey, "peer", "n0", now-time.Minute.Milliseconds(), "0123456789abcdef2"), false},
		{"future", sign(testKey, "peer", "n0", now+time.Minute.Milliseconds(), "0123456789abcdef3"), false},
		{"addressed to another node", sign(testKey, "peer", "n9", now, "0123456789abcdef4"), false},
		{"short nonce", sign(testKey, "peer", "n0", now, "x"), false},
		{"another cluster, same key", signAs(testKey, "other", "peer", "n0", now, "0123456789abcdef5"), false},
		{"no headers", http.Header{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := b.authenticate(tt.h)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrAuth) {
				t.Fatalf("err = %v, want ErrAuth", err)
			}
		})
	}
}

func TestHandlerRejectsUnauthenticated(t *testing.T) {
	c, bs := newTestCluster(t, 1, nil)
	brokertest.StartAll(t, bs...)
	srv := c.servers["n0"]
	for path, want := range map[string]int{MountPath + "ws": http.StatusUnauthorized, MountPath + "nope": http.StatusNotFound} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	self := transport.Peer{Name: "n", Addr: "http://127.0.0.1:1"}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Self: self, Key: testKey}, true},
		{"no name", Config{Self: transport.Peer{Addr: self.Addr}, Key: testKey}, false},
		{"bad addr", Config{Self: transport.Peer{Name: "n", Addr: "127.0.0.1:1"}, Key: testKey}, false},
		{"short key", Config{Self: self, Key: []byte("short")}, false},
		{"negative history", Config{Self: self, Key: testKey, HistorySize: -1}, false},
		{"negative window", Config{Self: self, Key: testKey, DedupeWindow: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.cfg)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if b != nil {
				_ = b.Close(context.Background())
			}
		})
	}
}

func TestOwnershipSpreads(t *testing.T) {
	b := &Broker{cfg: Config{Self: transport.Peer{Name: "n0"}}}
	b.peers.Store(&peerSet{list: []transport.Peer{{Name: "n0"}, {Name: "n1"}, {Name: "n2"}}})
	counts := map[string]int{}
	for i := range 3000 {
		o, bk, ok := b.ranked("r:room" + strconv.Itoa(i))
		if !ok || o.Name == bk.Name {
			t.Fatalf("owner %v backup %v", o, bk)
		}
		counts[o.Name]++
	}
	for n, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("%s owns %d of 3000 channels", n, c)
		}
	}
}
