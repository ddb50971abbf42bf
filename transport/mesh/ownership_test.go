package mesh

import (
	"context"
	"fmt"
	"maps"
	"slices"
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

// TestJoinWithDisagreeingViews is a node joining while the others have
// not heard of it yet: n2 sees the whole cluster and owns the channel in
// that view, n0 and n1 still see only each other and route to n0. Every
// node publishes and announces present users meanwhile; then the views
// converge, one node at a time. There must be one stream (no publication
// ordered twice, no gap, nothing acked lost), every subscriber must
// deliver exactly it, and presence must be complete on every node.
func TestJoinWithDisagreeingViews(t *testing.T) {
	c, bs, recs, ch := startJoining(t)
	ctx := t.Context()
	subs := []int{0, 1, 2}

	const perNode = 30
	users := make(map[string][]string) // user -> node
	for i, b := range bs {
		for j := range 3 {
			u := fmt.Sprintf("u%d-%d", i, j)
			users[u] = []string{b.cfg.Self.Name}
		}
	}
	load := startPublishers(t, bs, ch, subs, 1, perNode, func(i, j int) {
		if j%10 == 0 {
			u := fmt.Sprintf("u%d-%d", i, j/10)
			if err := bs[i].AddPresence(ctx, ch, u); err != nil {
				t.Errorf("add presence %s on n%d: %v", u, i, err)
			}
		}
	})
	brokertest.Eventually(t, "a third published with split views", func() bool { return load.published.Load() >= perNode })
	c.setView("n0", nil)
	brokertest.Eventually(t, "two thirds published", func() bool { return load.published.Load() >= 2*perNode })
	c.setView("n1", nil)
	acked := load.wait(t)

	checkOneStream(t, bs, recs, subs, ch, acked)
	for _, b := range bs {
		brokertest.Eventually(t, "presence complete on "+b.cfg.Self.Name, func() bool {
			got, err := b.Presence(ctx, ch)
			return err == nil && maps.EqualFunc(got, users, slices.Equal)
		})
	}
}

// startJoining starts three brokers while n2 is joining: n0 and n1 do not
// list it yet, n2 sees all three. Every node subscribes to the returned
// channel, which n0 owns in the others' view and n2 in its own (and in
// everyone's once the views agree).
func startJoining(t *testing.T) (*testCluster, []*Broker, []*brokertest.Recorder, string) {
	t.Helper()
	c, bs := newTestCluster(t, 3, nil)
	ch := channelMovingTo(t, bs, 0, 2)
	c.setView("n0", []string{"n0", "n1"})
	c.setView("n1", []string{"n0", "n1"})
	recs := brokertest.StartAll(t, bs...)
	subscribe(t, bs, ch, 0, 1, 2)
	return c, bs, recs, ch
}

// TestJoinAfterEverythingPublished: every publication is made while the
// joining node n2 is missing from the other nodes' views, so the owner
// n0 can deliver none of them to n2 (it has no address for it) and no
// later publication shows n2 the gap. When the views agree, n2 takes
// the channel over; its own subscription must then catch up from the
// stream it adopted, as the peers it announces itself to do.
func TestJoinAfterEverythingPublished(t *testing.T) {
	c, bs, recs, ch := startJoining(t)
	subs := []int{0, 1, 2}
	acked := startPublishers(t, bs, ch, subs, 1, 10, nil).wait(t)
	c.setView("n0", nil)
	c.setView("n1", nil)
	checkOneStream(t, bs, recs, subs, ch, acked)
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
	subs := []int{1, 2}
	recs, ch, _ := startOnChannel(t, bs, subs...)
	const perNode = 40
	load := startPublishers(t, bs, ch, subs, 1, perNode, nil)
	brokertest.Eventually(t, "some publications before the leave", func() bool { return load.published.Load() >= perNode/2 })
	c.leave("n0")
	cctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := bs[0].Close(cctx); err != nil {
		t.Fatal(err)
	}
	c.servers["n0"].Close()
	acked := load.wait(t)
	checkOneStream(t, bs[1:], recs[1:], []int{0, 1}, ch, acked)
}

// TestRegisteredBeforeOwnerSeesNode: a node that joins and registers with
// a channel's owner before the owner's view lists it keeps its
// registration through the owner's next membership change, and gets the
// channel's publications once the views agree. (Forgetting it as gone
// left it subscribed in its own eyes and deaf in fact: a logout published
// on s:revoked never reached a node that had just started.)
func TestRegisteredBeforeOwnerSeesNode(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	recs, ch, _ := startOnChannel(t, bs) // in {n0, n1} too: n0 ranks first
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
