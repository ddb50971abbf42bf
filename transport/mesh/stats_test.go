package mesh

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
)

type observations struct{ n atomic.Int64 }

func (o *observations) Observe(float64) { o.n.Add(1) }

// TestStats: the owner and the backup report the channel and what it
// retains; the links count their connections and losses, and a failover
// counts one takeover on the node that continues the stream.
func TestStats(t *testing.T) {
	requests := make([]*observations, 3)
	takeovers := make([]*observations, 3)
	c, bs := newTestCluster(t, 3, func(i int, cfg *Config) {
		requests[i], takeovers[i] = &observations{}, &observations{}
		cfg.RequestSeconds, cfg.TakeoverSeconds = requests[i], takeovers[i]
	})
	survivors := []int{1, 2}
	recs, ch, backup := startOnChannel(t, bs, survivors...)
	ctx := t.Context()
	for i := range 10 {
		if _, err := bs[survivors[i%2]].Publish(ctx, ch, []byte("m"+strconv.Itoa(i)), transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range survivors {
		recs[i].WaitN(t, ch, 10)
	}
	// A channel's flusher may still hold it just after the ack: Stats
	// then counts it as busy, so the checks wait.
	statsSay(t, bs[0], "the owner", func(s Stats) bool {
		return s.Owned == 1 && s.Retained == 10 && s.Created == 1 && s.Takeovers == 0
	})
	statsSay(t, bs[backup], "the backup", func(s Stats) bool {
		return s.Replicas == 1 && s.Retained == 10 && s.LinkConnects > 0
	})
	if requests[1].n.Load() == 0 {
		t.Error("no request round trip observed on n1, which publishes to n0")
	}

	c.kill(t, "n0")
	c.remove("n0")
	if _, err := bs[1].Publish(ctx, ch, []byte("after"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	statsSay(t, bs[backup], "the new owner", func(s Stats) bool {
		return s.Takeovers == 1 && s.Owned == 1 && s.Retained == 11
	})
	if n := takeovers[backup].n.Load(); n != 1 {
		t.Errorf("takeover durations observed: %d, want 1", n)
	}
}

func statsSay(t *testing.T, b *Broker, who string, ok func(Stats) bool) {
	t.Helper()
	clustertest.WaitFor(t, 10*time.Second, who+"'s stats", func() bool { return ok(b.Stats()) })
}

// TestStatsReplicationLag: publications the owner has ordered but not
// confirmed are counted while their batch is held up, and the copies to
// the backup are timed.
func TestStatsReplicationLag(t *testing.T) {
	logs := []*memLog{newMemLog(), newMemLog()}
	copies := &observations{}
	_, bs := newTestCluster(t, 2, func(i int, cfg *Config) {
		cfg.Log = logs[i]
		if i == 0 {
			cfg.ReplicateSeconds = copies
		}
	})
	recs, ch, _ := startOnChannel(t, bs, 1)
	ctx := t.Context()
	release := make(chan struct{})
	logs[0].setHook(func(ctx context.Context, _ transport.Publication) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			_, err := bs[i%2].Publish(ctx, ch, []byte("m"+strconv.Itoa(i)), transport.PublishOptions{})
			errs <- err
		}()
	}
	statsSay(t, bs[0], "the owner, with its log held", func(s Stats) bool { return s.Unconfirmed == 3 })
	close(release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	recs[1].WaitN(t, ch, 3)
	statsSay(t, bs[0], "the owner, released", func(s Stats) bool { return s.Unconfirmed == 0 && s.Owned == 1 })
	if copies.n.Load() == 0 {
		t.Error("no copy to the backup timed")
	}
}
