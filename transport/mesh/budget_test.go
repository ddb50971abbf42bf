package mesh

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// fillRooms publishes per messages of size bytes to each of n channels
// "r:fill<i>", alternating between the nodes, and returns the last
// publication of each.
func fillRooms(t *testing.T, bs []*Broker, n, per, size int) []transport.Publication {
	t.Helper()
	last := make([]transport.Publication, n)
	data := []byte(strings.Repeat("x", size))
	for i := range n {
		for j := range per {
			p, err := bs[(i+j)%len(bs)].Publish(t.Context(), fmt.Sprint("r:fill", i), data, transport.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			last[i] = p
		}
	}
	return last
}

// The attack this bounds: many channels, each filled to its retention
// with large messages, on the owner and on its backup. With a budget,
// each node's history in memory comes back under it (the least recently
// used channels are evicted, pinned ones never), one order per channel
// goes on, and a resume from before an evicted history is not recovered.
func TestHistoryBudgetEvicts(t *testing.T) {
	const budget = 128 << 10
	_, bs := newTestCluster(t, 2, func(_ int, cfg *Config) {
		cfg.HistorySize = 20
		cfg.HistoryBudget = budget
		cfg.Pinned = func(ch string) bool { return strings.HasPrefix(ch, "s:") }
	})
	brokertest.StartAll(t, bs...)
	ctx := t.Context()
	sys, err := bs[0].Publish(ctx, "s:table", []byte(strings.Repeat("s", 4000)), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	last := fillRooms(t, bs, 12, 20, 4000) // 1 MB on each node
	for _, b := range bs {
		clustertest.WaitFor(t, 5*time.Second, b.cfg.Self.Name+"'s history under budget", func() bool {
			return b.Stats().RetainedBytes <= budget
		})
		if st := b.Stats(); st.Evictions == 0 {
			t.Fatalf("%s: under budget with no eviction: %+v", b.cfg.Self.Name, st)
		}
	}
	res, err := bs[1].History(ctx, "s:table", transport.HistoryRequest{})
	if err != nil || len(res.Publications) != 1 || res.Publications[0].Offset != sys.Offset {
		t.Fatalf("pinned channel after evictions: %v %+v", err, res)
	}
	// The first channel was used least recently: its history is gone,
	// its order is not.
	first := last[0]
	res, err = bs[0].History(ctx, "r:fill0", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 10, Epoch: first.Epoch}})
	if err != nil || res.Recovered || res.Latest != (transport.StreamPosition{Offset: first.Offset, Epoch: first.Epoch}) {
		t.Fatalf("resume in an evicted channel: %v recovered=%v latest=%+v", err, res.Recovered, res.Latest)
	}
	p, err := bs[1].Publish(ctx, "r:fill0", []byte("next"), transport.PublishOptions{})
	if err != nil || p.Offset != first.Offset+1 || p.Epoch != first.Epoch {
		t.Fatalf("publish after eviction: %v %+v, want offset %d in %s", err, p, first.Offset+1, first.Epoch)
	}
	// The last channel filled was used most recently: kept.
	newest := last[len(last)-1]
	res, err = bs[0].History(ctx, "r:fill11", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 10, Epoch: newest.Epoch}})
	if err != nil || !res.Recovered || !slices.Equal(brokertest.Offsets(res.Publications), brokertest.Seq(11, 20)) {
		t.Fatalf("resume in the newest channel: %v recovered=%v %v", err, res.Recovered, brokertest.Offsets(res.Publications))
	}
}

// With a history log, eviction only drops the memory copy: the history
// is read back from disk when next used, and a resume is recovered.
func TestHistoryBudgetEvictsToLog(t *testing.T) {
	const budget = 128 << 10
	_, bs := newBoltCluster(t, testDirs(t, 2), BoltOptions{HistorySize: 20}, func(_ int, cfg *Config) {
		cfg.HistoryBudget = budget
	})
	brokertest.StartAll(t, bs...)
	ctx := t.Context()
	last := fillRooms(t, bs, 12, 20, 4000)
	for _, b := range bs {
		clustertest.WaitFor(t, 5*time.Second, b.cfg.Self.Name+"'s history under budget", func() bool {
			return b.Stats().RetainedBytes <= budget
		})
	}
	first := last[0]
	// Published while cold: on disk only, and read back in order.
	p, err := bs[1].Publish(ctx, "r:fill0", []byte("next"), transport.PublishOptions{})
	if err != nil || p.Offset != first.Offset+1 {
		t.Fatalf("publish after eviction: %v %+v", err, p)
	}
	for _, b := range bs {
		res, err := b.History(ctx, "r:fill0", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 11, Epoch: first.Epoch}})
		if err != nil || !res.Recovered || !slices.Equal(brokertest.Offsets(res.Publications), brokertest.Seq(12, 21)) {
			t.Fatalf("%s: resume in an evicted channel: %v recovered=%v %v", b.cfg.Self.Name, err, res.Recovered, brokertest.Offsets(res.Publications))
		}
	}
}
