package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
)

// HistorySize is the retention every factory must configure: the suite
// checks that a channel keeps exactly this many publications.
const HistorySize = 100

// WaitTimeout bounds every wait in the suite.
const WaitTimeout = 15 * time.Second

// Factory returns n unstarted brokers of one cluster, configured with
// HistorySize. It registers their cleanup (Close) with t.
type Factory func(t *testing.T, nodes int) []transport.Broker

// Run runs the conformance suite against the brokers f builds.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"DeliverToEveryNode", testDeliverToEveryNode},
		{"NoDeliveryWithoutSubscription", testNoDeliveryWithoutSubscription},
		{"OffsetsAndEpoch", testOffsetsAndEpoch},
		{"ChannelsIndependent", testChannelsIndependent},
		{"OneOrderUnderConcurrency", testOneOrderUnderConcurrency},
		{"Ephemeral", testEphemeral},
		{"History", testHistory},
		{"HistoryEmptyChannel", testHistoryEmptyChannel},
		{"Retention", testRetention},
		{"Idempotency", testIdempotency},
		{"Presence", testPresence},
		{"SubscribeIdempotent", testSubscribeIdempotent},
		{"Payloads", testPayloads},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

// Recorder is a transport.Handler that keeps what it is given, per
// channel, and notices overlapping calls for one channel.
type Recorder struct {
	mu      sync.Mutex
	pubs    map[string][]transport.Publication
	active  map[string]bool
	overlap []string
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{pubs: make(map[string][]transport.Publication), active: make(map[string]bool)}
}

// HandlePublication implements transport.Handler.
func (r *Recorder) HandlePublication(ch string, pub transport.Publication) {
	r.mu.Lock()
	if r.active[ch] {
		r.overlap = append(r.overlap, ch)
	}
	r.active[ch] = true
	r.mu.Unlock()
	// Give a concurrent call for the same channel a chance to show up.
	runtime.Gosched()
	r.mu.Lock()
	r.pubs[ch] = append(r.pubs[ch], pub)
	r.active[ch] = false
	r.mu.Unlock()
}

// StartAll starts every broker of bs, each with a Recorder of its own,
// and returns the recorders in the same order.
func StartAll[B transport.Broker](tb testing.TB, bs ...B) []*Recorder {
	tb.Helper()
	recs := make([]*Recorder, len(bs))
	for i, b := range bs {
		recs[i] = NewRecorder()
		if err := b.Start(tb.Context(), recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	return recs
}

// Get returns a copy of what ch received so far.
func (r *Recorder) Get(ch string) []transport.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pubs[ch])
}

// Overlaps returns the channels for which HandlePublication ran
// concurrently with itself (a contract violation).
func (r *Recorder) Overlaps() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.overlap)
}

// WaitN waits until ch received at least n publications and returns them.
func (r *Recorder) WaitN(tb testing.TB, ch string, n int) []transport.Publication {
	tb.Helper()
	var got []transport.Publication
	Eventually(tb, fmt.Sprintf("%d publications on %s", n, ch), func() bool {
		got = r.Get(ch)
		return len(got) >= n
	})
	return got
}

// Eventually polls cond until it holds or WaitTimeout passes, then fails
// tb naming what was awaited.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	clustertest.WaitFor(tb, WaitTimeout, what, cond)
}

// node is a started broker and its recorder.
type node struct {
	transport.Broker
	rec *Recorder
}

func startNodes(t *testing.T, f Factory, n int) []node {
	t.Helper()
	bs := f(t, n)
	if len(bs) != n {
		t.Fatalf("factory returned %d brokers, want %d", len(bs), n)
	}
	nodes := make([]node, n)
	for i, b := range bs {
		rec := NewRecorder()
		if err := b.Start(ctxT(t), rec); err != nil {
			t.Fatalf("node %d: Start: %v", i, err)
		}
		nodes[i] = node{b, rec}
	}
	t.Cleanup(func() {
		for i, nd := range nodes {
			if o := nd.rec.Overlaps(); len(o) > 0 {
				t.Errorf("node %d: concurrent HandlePublication calls on %v", i, o)
			}
		}
	})
	return nodes
}

// ctxT is a context bounded by WaitTimeout and the test's lifetime.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), WaitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// channelName returns a fresh channel name, so subtests sharing a backing
// service never see each other's state.
func channelName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "." + hex.EncodeToString(b[:])
}

func subscribe(t *testing.T, nd node, chans ...string) {
	t.Helper()
	for _, ch := range chans {
		if err := nd.Subscribe(ctxT(t), ch); err != nil {
			t.Fatalf("Subscribe(%s): %v", ch, err)
		}
	}
}

func publish(t *testing.T, nd node, ch, data string, opts transport.PublishOptions) transport.Publication {
	t.Helper()
	pub, err := nd.Publish(ctxT(t), ch, []byte(data), opts)
	if err != nil {
		t.Fatalf("Publish(%s, %q): %v", ch, data, err)
	}
	return pub
}

func history(t *testing.T, nd node, ch string, req transport.HistoryRequest) transport.HistoryResult {
	t.Helper()
	res, err := nd.History(ctxT(t), ch, req)
	if err != nil {
		t.Fatalf("History(%s): %v", ch, err)
	}
	return res
}

// Offsets lists the publications' offsets, for comparing a stream with
// Seq and for failure messages.
func Offsets(pubs []transport.Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.Offset
	}
	return out
}

// Seq is the offsets from..to, both included (nil when to < from).
func Seq(from, to uint64) []uint64 {
	var out []uint64
	for o := from; o <= to; o++ {
		out = append(out, o)
	}
	return out
}

func samePub(a, b transport.Publication) bool {
	return a.Offset == b.Offset && a.Epoch == b.Epoch && a.Time == b.Time && bytes.Equal(a.Data, b.Data)
}

// settle publishes a marker on marker from nd's cluster and waits until
// every node in waiters has it: anything published before it that those
// nodes were due to get has then arrived.
func settle(t *testing.T, from node, marker string, waiters ...node) {
	t.Helper()
	want := make([]int, len(waiters))
	for i, w := range waiters {
		want[i] = len(w.rec.Get(marker)) + 1
	}
	publish(t, from, marker, "marker", transport.PublishOptions{Ephemeral: true})
	for i, w := range waiters {
		w.rec.WaitN(t, marker, want[i])
	}
}

func testDeliverToEveryNode(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 3)
	ch := channelName("r:every")
	for _, nd := range nodes {
		subscribe(t, nd, ch)
	}
	a := publish(t, nodes[0], ch, "a", transport.PublishOptions{})
	b := publish(t, nodes[2], ch, "b", transport.PublishOptions{})
	for i, nd := range nodes {
		got := nd.rec.WaitN(t, ch, 2)
		if len(got) != 2 || !samePub(got[0], a) || !samePub(got[1], b) {
			t.Fatalf("node %d got %+v, want [%+v %+v]", i, got, a, b)
		}
	}
}

func testNoDeliveryWithoutSubscription(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 3)
	ch, marker := channelName("r:nosub"), channelName("r:marker")
	subscribe(t, nodes[0], ch, marker)
	subscribe(t, nodes[1], ch, marker)
	subscribe(t, nodes[2], marker)

	// The publisher itself is not subscribed: it must not get its own.
	first := publish(t, nodes[2], ch, "one", transport.PublishOptions{})
	nodes[0].rec.WaitN(t, ch, 1)
	nodes[1].rec.WaitN(t, ch, 1)

	if err := nodes[1].Unsubscribe(ctxT(t), ch); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	second := publish(t, nodes[0], ch, "two", transport.PublishOptions{})
	got0 := nodes[0].rec.WaitN(t, ch, 2)
	settle(t, nodes[0], marker, nodes...)

	if len(got0) != 2 || !samePub(got0[0], first) || !samePub(got0[1], second) {
		t.Errorf("subscribed node got %+v", got0)
	}
	if got := nodes[1].rec.Get(ch); len(got) != 1 || !samePub(got[0], first) {
		t.Errorf("node that unsubscribed after the first publication got %+v", got)
	}
	if got := nodes[2].rec.Get(ch); len(got) != 0 {
		t.Errorf("never-subscribed publisher got %+v", got)
	}
}

func testOffsetsAndEpoch(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 1)
	ch := channelName("r:offsets")
	before := time.Now().Add(-time.Second).UnixMilli()
	var pubs []transport.Publication
	for i := range 3 {
		pubs = append(pubs, publish(t, nodes[0], ch, strconv.Itoa(i), transport.PublishOptions{}))
	}
	after := time.Now().Add(time.Second).UnixMilli()
	if got := Offsets(pubs); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("offsets %v, want [1 2 3]", got)
	}
	for _, p := range pubs {
		if p.Epoch == "" || p.Epoch != pubs[0].Epoch {
			t.Fatalf("epochs %q, %q: want one non-empty epoch", pubs[0].Epoch, p.Epoch)
		}
		if p.Time < before || p.Time > after {
			t.Fatalf("Time %d not within [%d, %d] (Unix ms)", p.Time, before, after)
		}
	}
	res := history(t, nodes[0], ch, transport.HistoryRequest{})
	if want := (transport.StreamPosition{Offset: 3, Epoch: pubs[0].Epoch}); res.Latest != want {
		t.Fatalf("Latest %+v, want %+v", res.Latest, want)
	}
}

func testChannelsIndependent(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	a, b := channelName("r:a"), channelName("u:b")
	publish(t, nodes[0], a, "a1", transport.PublishOptions{})
	publish(t, nodes[1], a, "a2", transport.PublishOptions{})
	pb := publish(t, nodes[1], b, "b1", transport.PublishOptions{})
	if pb.Offset != 1 {
		t.Fatalf("first publication on a second channel has offset %d, want 1", pb.Offset)
	}
	if res := history(t, nodes[0], b, transport.HistoryRequest{}); len(res.Publications) != 1 {
		t.Fatalf("channel b history %+v, want one publication", res.Publications)
	}
}

func testOneOrderUnderConcurrency(t *testing.T, f Factory) {
	const perNode = 30
	nodes := startNodes(t, f, 3)
	ch := channelName("r:order")
	for _, nd := range nodes {
		subscribe(t, nd, ch)
	}
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	acks := make([][]transport.Publication, len(nodes))
	for i, nd := range nodes {
		wg.Go(func() {
			for j := range perNode {
				p, err := nd.Publish(ctx, ch, fmt.Appendf(nil, "n%d-%d", i, j), transport.PublishOptions{})
				if err != nil {
					errs <- fmt.Errorf("node %d publish %d: %w", i, j, err)
					return
				}
				acks[i] = append(acks[i], p)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	total := perNode * len(nodes)
	ref := nodes[0].rec.WaitN(t, ch, total)
	if got := Offsets(ref); !slices.Equal(got, Seq(1, uint64(total))) {
		t.Fatalf("node 0 delivery offsets %v, want 1..%d in order", got, total)
	}
	for i, nd := range nodes[1:] {
		got := nd.rec.WaitN(t, ch, total)
		if len(got) != total || !slices.EqualFunc(got, ref, samePub) {
			t.Fatalf("node %d saw a different order than node 0", i+1)
		}
	}
	// One publisher's acks follow its own publish order.
	for i, a := range acks {
		if !slices.IsSortedFunc(a, func(x, y transport.Publication) int { return int(x.Offset) - int(y.Offset) }) {
			t.Fatalf("node %d acks out of order: %v", i, Offsets(a))
		}
		for _, p := range a {
			if !samePub(p, ref[p.Offset-1]) {
				t.Fatalf("ack %+v differs from delivery %+v", p, ref[p.Offset-1])
			}
		}
	}
	res := history(t, nodes[1], ch, transport.HistoryRequest{})
	if !slices.EqualFunc(res.Publications, ref, samePub) {
		t.Fatalf("history differs from delivery order")
	}
}

func testEphemeral(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	ch := channelName("r:eph")
	subscribe(t, nodes[0], ch)
	subscribe(t, nodes[1], ch)
	s1 := publish(t, nodes[0], ch, "s1", transport.PublishOptions{})
	e := publish(t, nodes[0], ch, "typing", transport.PublishOptions{Ephemeral: true})
	if e.Offset != 0 {
		t.Fatalf("ephemeral publication got offset %d, want 0", e.Offset)
	}
	// An idempotency key means nothing for ephemeral publications.
	publish(t, nodes[1], ch, "typing2", transport.PublishOptions{Ephemeral: true, IdempotencyKey: "eph"})
	s2 := publish(t, nodes[1], ch, "s2", transport.PublishOptions{})
	if s1.Offset != 1 || s2.Offset != 2 {
		t.Fatalf("stored offsets around ephemeral ones: %d, %d, want 1, 2", s1.Offset, s2.Offset)
	}
	for i, nd := range nodes {
		got := nd.rec.WaitN(t, ch, 4)
		var stored []uint64
		var eph []string
		for _, p := range got {
			if p.Offset == 0 {
				eph = append(eph, string(p.Data))
			} else {
				stored = append(stored, p.Offset)
			}
		}
		slices.Sort(eph)
		if !slices.Equal(stored, []uint64{1, 2}) || !slices.Equal(eph, []string{"typing", "typing2"}) {
			t.Fatalf("node %d got stored %v, ephemeral %q", i, stored, eph)
		}
	}
	res := history(t, nodes[1], ch, transport.HistoryRequest{})
	if got := Offsets(res.Publications); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("history offsets %v, want [1 2]: ephemeral publications must not be stored", got)
	}
}

func testHistory(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	ch := channelName("r:hist")
	var pubs []transport.Publication
	for i := 1; i <= 10; i++ {
		pubs = append(pubs, publish(t, nodes[0], ch, "m"+strconv.Itoa(i), transport.PublishOptions{}))
	}
	epoch := pubs[0].Epoch
	at := func(o uint64) *transport.StreamPosition { return &transport.StreamPosition{Offset: o, Epoch: epoch} }

	tests := []struct {
		name      string
		req       transport.HistoryRequest
		want      []uint64
		recovered bool
	}{
		{"latest 3", transport.HistoryRequest{Limit: 3}, Seq(8, 10), false},
		{"all", transport.HistoryRequest{}, Seq(1, 10), false},
		{"limit above size", transport.HistoryRequest{Limit: 50}, Seq(1, 10), false},
		{"since zero", transport.HistoryRequest{Since: at(0)}, Seq(1, 10), true},
		{"since middle", transport.HistoryRequest{Since: at(4)}, Seq(5, 10), true},
		{"since middle with limit", transport.HistoryRequest{Since: at(4), Limit: 2}, Seq(5, 6), true},
		{"since latest", transport.HistoryRequest{Since: at(10)}, nil, true},
		{"since future", transport.HistoryRequest{Since: at(11), Limit: 3}, Seq(8, 10), false},
		{"wrong epoch", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 4, Epoch: "x" + epoch}, Limit: 3}, Seq(8, 10), false},
		{"empty epoch", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 4}}, Seq(1, 10), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, nd := range nodes {
				res := history(t, nd, ch, tc.req)
				if got := Offsets(res.Publications); !slices.Equal(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
					t.Fatalf("node %d: offsets %v, want %v", i, got, tc.want)
				}
				if res.Recovered != tc.recovered {
					t.Fatalf("node %d: Recovered %v, want %v", i, res.Recovered, tc.recovered)
				}
				if want := (transport.StreamPosition{Offset: 10, Epoch: epoch}); res.Latest != want {
					t.Fatalf("node %d: Latest %+v, want %+v", i, res.Latest, want)
				}
				for _, p := range res.Publications {
					if !samePub(p, pubs[p.Offset-1]) {
						t.Fatalf("node %d: history has %+v, publish returned %+v", i, p, pubs[p.Offset-1])
					}
				}
			}
		})
	}
}

func testHistoryEmptyChannel(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 1)
	res := history(t, nodes[0], channelName("r:empty"), transport.HistoryRequest{Limit: 10})
	if len(res.Publications) != 0 || res.Latest.Offset != 0 || res.Recovered {
		t.Fatalf("History of an unused channel: %+v", res)
	}
}

func testRetention(t *testing.T, f Factory) {
	const extra = 20
	nodes := startNodes(t, f, 1)
	ch := channelName("r:retain")
	var last transport.Publication
	for i := range HistorySize + extra {
		last = publish(t, nodes[0], ch, strconv.Itoa(i), transport.PublishOptions{})
	}
	epoch := last.Epoch
	at := func(o uint64) *transport.StreamPosition { return &transport.StreamPosition{Offset: o, Epoch: epoch} }
	first, end := uint64(extra+1), uint64(HistorySize+extra)

	tests := []struct {
		name      string
		req       transport.HistoryRequest
		want      []uint64
		recovered bool
	}{
		{"all retained", transport.HistoryRequest{}, Seq(first, end), false},
		{"since just before oldest", transport.HistoryRequest{Since: at(first - 1)}, Seq(first, end), true},
		{"since trimmed", transport.HistoryRequest{Since: at(first - 2)}, Seq(first, end), false},
		{"since long trimmed with limit", transport.HistoryRequest{Since: at(3), Limit: 10}, Seq(end-9, end), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := history(t, nodes[0], ch, tc.req)
			if got := Offsets(res.Publications); !slices.Equal(got, tc.want) {
				t.Fatalf("offsets %v, want %v", got, tc.want)
			}
			if res.Recovered != tc.recovered {
				t.Fatalf("Recovered %v, want %v", res.Recovered, tc.recovered)
			}
		})
	}
}

func testIdempotency(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	ch, other := channelName("r:idem"), channelName("r:idem2")
	subscribe(t, nodes[0], ch)
	subscribe(t, nodes[1], ch)

	p1 := publish(t, nodes[0], ch, "x", transport.PublishOptions{IdempotencyKey: "k1"})
	again := publish(t, nodes[0], ch, "x", transport.PublishOptions{IdempotencyKey: "k1"})
	if !samePub(again, p1) {
		t.Fatalf("repeated key returned %+v, first was %+v", again, p1)
	}
	// The key is cluster-wide: a retry may reach another node.
	fromOther := publish(t, nodes[1], ch, "x", transport.PublishOptions{IdempotencyKey: "k1"})
	if !samePub(fromOther, p1) {
		t.Fatalf("repeated key on another node returned %+v, first was %+v", fromOther, p1)
	}
	p2 := publish(t, nodes[1], ch, "y", transport.PublishOptions{IdempotencyKey: "k2"})
	if p2.Offset != 2 {
		t.Fatalf("new key got offset %d, want 2", p2.Offset)
	}
	// Keys are per channel.
	if p := publish(t, nodes[0], other, "x", transport.PublishOptions{IdempotencyKey: "k1"}); p.Offset != 1 {
		t.Fatalf("same key on another channel got offset %d, want 1", p.Offset)
	}
	for i, nd := range nodes {
		got := nd.rec.WaitN(t, ch, 2)
		settle(t, nodes[0], ch, nd) // anything extra would arrive before this
		got = nd.rec.Get(ch)
		if got = slices.DeleteFunc(got, func(p transport.Publication) bool { return p.Offset == 0 }); !slices.Equal(Offsets(got), []uint64{1, 2}) {
			t.Fatalf("node %d delivered offsets %v, want [1 2] (a deduplicated publish must not deliver)", i, Offsets(got))
		}
	}
	res := history(t, nodes[0], ch, transport.HistoryRequest{})
	if got := Offsets(res.Publications); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("history offsets %v, want [1 2]", got)
	}
}

func testPresence(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 3)
	ch, other := channelName("r:pres"), channelName("r:pres2")
	ctx := ctxT(t)
	pm := make([]transport.PresenceManager, len(nodes))
	for i, nd := range nodes {
		p, ok := nd.Broker.(transport.PresenceManager)
		if !ok {
			t.Fatalf("node %d: %T does not implement transport.PresenceManager", i, nd.Broker)
		}
		pm[i] = p
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	presence := func(i int, c string) map[string][]string {
		t.Helper()
		got, err := pm[i].Presence(ctx, c)
		must(err)
		for u, ns := range got {
			got[u] = slices.Sorted(slices.Values(ns))
		}
		return got
	}

	if got := presence(0, ch); len(got) != 0 {
		t.Fatalf("presence of an unused channel: %v", got)
	}
	// Learn the node names from the brokers themselves.
	must(pm[0].AddPresence(ctx, ch, "alice"))
	must(pm[0].AddPresence(ctx, ch, "alice")) // idempotent
	p := presence(2, ch)
	if len(p["alice"]) != 1 {
		t.Fatalf("after one add: %v", p)
	}
	n0 := p["alice"][0]
	must(pm[1].AddPresence(ctx, ch, "bob"))
	must(pm[1].AddPresence(ctx, ch, "alice"))
	p = presence(2, ch)
	if len(p["bob"]) != 1 {
		t.Fatalf("bob: %v", p)
	}
	n1 := p["bob"][0]
	if n0 == n1 {
		t.Fatalf("nodes 0 and 1 report the same node name %q", n0)
	}
	want := map[string][]string{"alice": slices.Sorted(slices.Values([]string{n0, n1})), "bob": {n1}}
	for i := range nodes {
		if got := presence(i, ch); !equalPresence(got, want) {
			t.Fatalf("node %d sees %v, want %v", i, got, want)
		}
	}
	if got := presence(1, other); len(got) != 0 {
		t.Fatalf("presence leaked to another channel: %v", got)
	}

	must(pm[0].RemovePresence(ctx, ch, "alice"))
	must(pm[0].RemovePresence(ctx, ch, "alice")) // idempotent
	must(pm[2].RemovePresence(ctx, ch, "carol")) // never added
	if got, want := presence(2, ch), map[string][]string{"alice": {n1}, "bob": {n1}}; !equalPresence(got, want) {
		t.Fatalf("after alice left node 0: %v, want %v", got, want)
	}
	must(pm[1].RemovePresence(ctx, ch, "alice"))
	must(pm[1].RemovePresence(ctx, ch, "bob"))
	if got := presence(0, ch); len(got) != 0 {
		t.Fatalf("after everyone left: %v", got)
	}
}

func equalPresence(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func testSubscribeIdempotent(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 1)
	nd := nodes[0]
	ch, marker, never := channelName("r:idemsub"), channelName("r:marker"), channelName("r:never")
	subscribe(t, nd, ch, ch, marker)
	publish(t, nd, ch, "one", transport.PublishOptions{})
	nd.rec.WaitN(t, ch, 1)
	settle(t, nd, marker, nd)
	if got := nd.rec.Get(ch); len(got) != 1 {
		t.Fatalf("subscribed twice, got %d deliveries of one publication", len(got))
	}
	for range 2 {
		if err := nd.Unsubscribe(ctxT(t), ch); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
	}
	if err := nd.Unsubscribe(ctxT(t), never); err != nil {
		t.Fatalf("Unsubscribe of a never-subscribed channel: %v", err)
	}
	publish(t, nd, ch, "two", transport.PublishOptions{})
	settle(t, nd, marker, nd)
	if got := nd.rec.Get(ch); len(got) != 1 {
		t.Fatalf("delivered after Unsubscribe: %+v", got)
	}
	// Subscribing again resumes delivery.
	subscribe(t, nd, ch)
	publish(t, nd, ch, "three", transport.PublishOptions{})
	if got := nd.rec.WaitN(t, ch, 2); string(got[1].Data) != "three" || got[1].Offset != 3 {
		t.Fatalf("after resubscribe got %+v", got[1])
	}
}

func testPayloads(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	ch := channelName("r:payload")
	subscribe(t, nodes[1], ch)
	binary := make([]byte, 0, 512)
	for i := range 256 {
		binary = append(binary, byte(i), ':')
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"text", []byte(`{"type":"message","text":"héllo"}`)},
		{"binary with separators", binary},
		{"large", bytes.Repeat([]byte("0123456789abcdef"), 4096)},
	}
	for i, tc := range tests {
		buf := slices.Clone(tc.data)
		p, err := nodes[0].Publish(ctxT(t), ch, buf, transport.PublishOptions{})
		if err != nil {
			t.Fatalf("%s: Publish: %v", tc.name, err)
		}
		// The broker must not keep the caller's buffer.
		for j := range buf {
			buf[j] ^= 0xff
		}
		got := nodes[1].rec.WaitN(t, ch, i+1)[i]
		if !bytes.Equal(got.Data, tc.data) || got.Offset != p.Offset {
			t.Fatalf("%s: delivered %d bytes at offset %d, want %d bytes at %d", tc.name, len(got.Data), got.Offset, len(tc.data), p.Offset)
		}
		res := history(t, nodes[1], ch, transport.HistoryRequest{Limit: 1})
		if len(res.Publications) != 1 || !bytes.Equal(res.Publications[0].Data, tc.data) {
			t.Fatalf("%s: history returned a different payload", tc.name)
		}
	}
}

func testClose(t *testing.T, f Factory) {
	nodes := startNodes(t, f, 2)
	ch := channelName("r:close")
	subscribe(t, nodes[1], ch)
	ctx := ctxT(t)
	for range 2 {
		if err := nodes[0].Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := nodes[0].Publish(ctx, ch, []byte("x"), transport.PublishOptions{}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := nodes[0].History(ctx, ch, transport.HistoryRequest{}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("History after Close: %v, want ErrClosed", err)
	}
	if err := nodes[0].Subscribe(ctx, ch); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	// The rest of the cluster carries on.
	publish(t, nodes[1], ch, "still here", transport.PublishOptions{})
	nodes[1].rec.WaitN(t, ch, 1)
}
