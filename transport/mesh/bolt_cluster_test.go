package mesh

// The mesh broker with Bolt history logs: the conformance suite, and
// restarts of the whole cluster from its files.

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// stopAll stops every node of c gracefully (broker, then log, then
// server), as a full restart of the cluster would.
func stopAll(t *testing.T, c *testCluster, bs []*Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range bs {
		if err := c.stop(ctx, b.cfg.Self.Name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMeshBoltConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, n int) []transport.Broker {
		c, bs := newBoltCluster(t, testDirs(t, n), BoltOptions{HistorySize: brokertest.HistorySize}, nil)
		return asBrokers(c, bs, true)
	})
}

// TestMeshBoltRestartAll publishes on a 3-node cluster, closes every node,
// starts them again from their directories (new ports, same names) and
// checks that each channel continues where it stopped: same epoch, next
// offset, recoverable from a position taken before the restart, and with
// its idempotency keys.
func TestMeshBoltRestartAll(t *testing.T) {
	clustertest.VerifyNoLeaks(t)
	opts := BoltOptions{HistorySize: 50}
	dirs := testDirs(t, 3)
	ctx := t.Context()

	c, bs := newBoltCluster(t, dirs, opts, nil)
	brokertest.StartAll(t, bs...)
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
			p, err := bs[(i+j)%3].Publish(ctx, ch, []byte(ch+"/"+strconv.Itoa(j)), transport.PublishOptions{IdempotencyKey: ch + "-k" + strconv.Itoa(j)})
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
	stopAll(t, c, bs)

	c, bs = newBoltCluster(t, dirs, opts, nil)
	recs := brokertest.StartAll(t, bs...)
	for i, ch := range chans {
		m := before[ch]
		nd, rec := bs[i%3], recs[i%3]
		if err := nd.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		since := transport.StreamPosition{Offset: 2, Epoch: m.last.Epoch}
		res, err := nd.History(ctx, ch, transport.HistoryRequest{Since: &since})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Recovered || res.Latest != (transport.StreamPosition{Offset: 5, Epoch: m.last.Epoch}) || !slices.Equal(brokertest.Offsets(res.Publications), []uint64{3, 4, 5}) {
			t.Fatalf("%s: history since 2 after restart: recovered=%v latest=%+v offsets=%v; before: %+v", ch, res.Recovered, res.Latest, brokertest.Offsets(res.Publications), m.last)
		}
		if got := string(res.Publications[2].Data); got != ch+"/4" {
			t.Fatalf("%s: offset 5 holds %q", ch, got)
		}
		// A retry of a publish acknowledged before the restart is still
		// recognised.
		again, err := bs[(i+1)%3].Publish(ctx, ch, []byte(ch+"/0"), transport.PublishOptions{IdempotencyKey: ch + "-k0"})
		if err != nil {
			t.Fatal(err)
		}
		if again.Offset != m.first.Offset || again.Epoch != m.first.Epoch {
			t.Fatalf("%s: retried key after restart got offset %d in %s, want %d in %s", ch, again.Offset, again.Epoch, m.first.Offset, m.first.Epoch)
		}
		p, err := bs[(i+2)%3].Publish(ctx, ch, []byte(ch+"/after"), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Epoch != m.last.Epoch || p.Offset != 6 {
			t.Fatalf("%s: first publish after restart: offset %d in %s, want 6 in %s", ch, p.Offset, p.Epoch, m.last.Epoch)
		}
		got := rec.WaitN(t, ch, 1)
		if got[0].Offset != 6 || got[0].Epoch != m.last.Epoch {
			t.Fatalf("%s: delivered %+v after restart", ch, got[0])
		}
		all, err := nd.History(ctx, ch, transport.HistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(brokertest.Offsets(all.Publications), []uint64{1, 2, 3, 4, 5, 6}) {
			t.Fatalf("%s: history after restart %v", ch, brokertest.Offsets(all.Publications))
		}
	}
}

// TestMeshBoltRetentionSurvivesRestart: the count limit holds across a
// restart, and history that rolled past the limit reports not recovered
// for a position before it.
func TestMeshBoltRetentionSurvivesRestart(t *testing.T) {
	opts := BoltOptions{HistorySize: 5}
	dirs := testDirs(t, 2)
	ctx := t.Context()
	c, bs := newBoltCluster(t, dirs, opts, nil)
	brokertest.StartAll(t, bs...)
	var last transport.Publication
	for j := range 12 {
		p, err := bs[j%2].Publish(ctx, "r:roll", []byte(strconv.Itoa(j)), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	stopAll(t, c, bs)
	_, bs = newBoltCluster(t, dirs, opts, nil)
	brokertest.StartAll(t, bs...)
	res, err := bs[0].History(ctx, "r:roll", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 2, Epoch: last.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || !slices.Equal(brokertest.Offsets(res.Publications), []uint64{8, 9, 10, 11, 12}) || res.Latest.Epoch != last.Epoch {
		t.Fatalf("after restart: recovered=%v offsets=%v latest=%+v", res.Recovered, brokertest.Offsets(res.Publications), res.Latest)
	}
}

// BenchmarkMeshBoltPublishDeliver is brokertest.Bench on two mesh nodes
// with Bolt logs: a stored publish is fsynced by the owner and by the
// backup before it is acknowledged.
func BenchmarkMeshBoltPublishDeliver(b *testing.B) {
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker {
		c, bs := newBoltCluster(b, testDirs(b, n), BoltOptions{HistorySize: brokertest.HistorySize}, nil)
		return asBrokers(c, bs, false)
	})
}
