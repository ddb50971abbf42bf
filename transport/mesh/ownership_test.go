package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// channelMovingTo finds a channel that node to owns in the full
// membership of bs and node from owns without to.
func channelMovingTo(t *testing.T, bs []*Broker, from, to int) string {
	t.Helper()
	full := &peerSet{}
	var without []transport.Peer
	for i, b := range bs {
		full.list = append(full.list, b.cfg.Self)
		if i != to {
			without = append(without, b.cfg.Self)
		}
	}
	for i := range 10000 {
		ch := fmt.Sprintf("r:join%d", i)
		if ownerIn(full, ch).Name == bs[to].cfg.Self.Name && ownerIn(&peerSet{list: without}, ch).Name == bs[from].cfg.Self.Name {
			return ch
		}
	}
	t.Fatal("no channel found")
	return ""
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
			t.Fatalf("%s reads another stream: %v in %s, %s reads %v in %s", b.cfg.Self.Name, offsetsOf(res.Publications), res.Latest.Epoch,
				bs[0].cfg.Self.Name, offsetsOf(ref.Publications), ref.Latest.Epoch)
		}
	}
	if got, want := offsetsOf(ref.Publications), seq(1, uint64(len(acked))); !slices.Equal(got, want) {
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
			t.Fatalf("n%d delivered %v, history is %v", i, offsetsOf(got), offsetsOf(ref.Publications))
		}
	}
}

func samePub(a, b transport.Publication) bool {
	return a.Offset == b.Offset && a.Epoch == b.Epoch && bytes.Equal(a.Data, b.Data)
}

// TestJoinWithDisagreeingViews is a node joining while the others have
// not heard of it yet: n2 sees the whole cluster and owns the channel in
// that view, n0 and n1 still see only each other and route to n0. Every
// node publishes and announces present users meanwhile; then the views
// converge, one node at a time. There must be one stream (no publication
// ordered twice, no gap, nothing acked lost), every subscriber must
// deliver exactly it, and presence must be complete on every node.
func TestJoinWithDisagreeingViews(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	ch := channelMovingTo(t, bs, 0, 2)
	c.setView("n0", []string{"n0", "n1"})
	c.setView("n1", []string{"n0", "n1"})
	recs := startAll(t, bs)
	ctx := t.Context()
	subs := []int{0, 1, 2}
	for _, i := range subs {
		if err := bs[i].Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}

	const perNode = 30
	var (
		mu        sync.Mutex
		acked     = make(map[string]transport.Publication)
		published atomic.Int64
		wg        sync.WaitGroup
	)
	users := make(map[string][]string) // user -> node
	for i, b := range bs {
		for j := range 3 {
			u := fmt.Sprintf("u%d-%d", i, j)
			users[u] = []string{b.cfg.Self.Name}
		}
	}
	for i, b := range bs {
		wg.Go(func() {
			for j := range perNode {
				if j%10 == 0 {
					u := fmt.Sprintf("u%d-%d", i, j/10)
					if err := b.AddPresence(ctx, ch, u); err != nil {
						t.Errorf("add presence %s on n%d: %v", u, i, err)
					}
				}
				key := fmt.Sprintf("n%d-%d", i, j)
				p, err := publishRetrying(ctx, t, b, ch, key, 3*time.Second)
				if err != nil {
					t.Errorf("publish %s: %v", key, err)
					return
				}
				mu.Lock()
				acked[key] = p
				mu.Unlock()
				published.Add(1)
			}
		})
	}
	brokertest.Eventually(t, "a third published with split views", func() bool { return published.Load() >= perNode })
	c.setView("n0", nil)
	brokertest.Eventually(t, "two thirds published", func() bool { return published.Load() >= 2*perNode })
	c.setView("n1", nil)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	checkOneStream(t, bs, recs, subs, ch, acked)
	for _, b := range bs {
		brokertest.Eventually(t, "presence complete on "+b.cfg.Self.Name, func() bool {
			got, err := b.Presence(ctx, ch)
			return err == nil && maps.EqualFunc(got, users, slices.Equal)
		})
	}
}

// TestOwnerLeavesMidPublish stops a channel's owner gracefully (the
// membership drops it, then its broker closes, as cmd's Stop does) while
// two nodes publish. Every Publish must return, acked or with
// ErrUnavailable, within its deadline; the publishers retry with their
// idempotency keys; every acked publication must reach both subscribers,
// the publishing node included (that delivery is the client's ack),
// exactly once.
func TestOwnerLeavesMidPublish(t *testing.T) {
	c, bs := newTestCluster(t, 3, func(_ int, cfg *Config) { cfg.RequestTimeout = time.Second })
	recs := startAll(t, bs)
	ctx := t.Context()
	ch, _ := channelOwnedBy(t, bs, 0)
	subs := []int{1, 2}
	for _, i := range subs {
		if err := bs[i].Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	const perNode = 40
	var (
		mu        sync.Mutex
		acked     = make(map[string]transport.Publication)
		published atomic.Int64
		wg        sync.WaitGroup
	)
	for _, i := range subs {
		wg.Go(func() {
			for j := range perNode {
				key := fmt.Sprintf("n%d-%d", i, j)
				p, err := publishRetrying(ctx, t, bs[i], ch, key, 3*time.Second)
				if err != nil {
					t.Errorf("publish %s: %v", key, err)
					return
				}
				mu.Lock()
				acked[key] = p
				mu.Unlock()
				published.Add(1)
			}
		})
	}
	brokertest.Eventually(t, "some publications before the leave", func() bool { return published.Load() >= perNode/2 })
	c.remove("n0")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := bs[0].Close(cctx); err != nil {
		t.Fatal(err)
	}
	c.servers["n0"].Close()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	checkOneStream(t, bs[1:], []*brokertest.Recorder{nil, recs[1], recs[2]}[1:], []int{0, 1}, ch, acked)
}

// TestRegisteredBeforeOwnerSeesNode: a node that joins and registers with
// a channel's owner before the owner's view lists it keeps its
// registration through the owner's next membership change, and gets the
// channel's publications once the views agree. (Forgetting it as gone
// left it subscribed in its own eyes and deaf in fact: a logout published
// on s:revoked never reached a node that had just started.)
func TestRegisteredBeforeOwnerSeesNode(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	recs := startAll(t, bs)
	ch, _ := channelOwnedBy(t, bs, 0) // in {n0, n1} too: n0 ranks first
	c.setView("n0", []string{"n0", "n1"})
	// n0 as it is right after n2 started: no view of its own listed n2.
	ps := bs[0].peers.Load()
	bs[0].peers.Store(&peerSet{list: ps.list, alive: ps.alive, seen: maps.Clone(ps.alive)})
	ctx := t.Context()
	if err := bs[2].Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	// n0 goes through a membership change of its own while n2 is still
	// outside its view (another node joining, say), applied now rather
	// than whenever the membership goroutine gets to it.
	c.setView("n0", []string{"n0", "n1"})
	bs[0].onPeersChanged(true)
	s := bs[0].chanFor(ch)
	if err := s.lock(ctx); err != nil {
		t.Fatal(err)
	}
	_, kept := s.interest["n2"]
	s.unlock()
	if !kept {
		t.Fatal("the owner forgot n2's registration at a membership change that never listed n2")
	}

	c.setView("n0", nil)
	p, err := bs[1].Publish(ctx, ch, []byte("after"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := recs[2].WaitN(t, ch, 1)
	if got[0].Offset != p.Offset || string(got[0].Data) != "after" {
		t.Fatalf("n2 got %+v, want offset %d", got[0], p.Offset)
	}

	interested := func() bool {
		t.Helper()
		if err := s.lock(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.unlock()
		_, ok := s.interest["n2"]
		return ok
	}

	// n2 dies: a node seen and then gone is forgotten. (While n2 lives,
	// an owner that drops it would just get it back: n2 re-registers
	// when the owner's link to it closes.)
	if err := bs[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	c.remove("n2")
	bs[0].onPeersChanged(true)
	if interested() {
		t.Fatal("the owner kept the registration of a node that left")
	}

	// n2 restarts under the same name, and its registration reaches n0
	// before n0's view lists n2 again: an unrelated membership change on
	// n0 in between must not drop it with the old one.
	if _, err := bs[0].serveRequest(ctx, "n2", opSubscribe, ch, &dec{b: enc(nil).bool1(false)}); err != nil {
		t.Fatal(err)
	}
	bs[0].onPeersChanged(true)
	if !interested() {
		t.Fatal("the owner dropped the registration of a node that came back")
	}
}
