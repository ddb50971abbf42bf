package mesh

import (
	"sync/atomic"
	"testing"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// counter is a Handler that counts deliveries; it never blocks.
type counter struct{ n atomic.Int64 }

func (c *counter) HandlePublication(string, transport.Publication) { c.n.Add(1) }

// BenchmarkConcurrentPublish measures one busy channel: 16 publishers per
// CPU on the two non-owner nodes of a 3-node cluster publish stored
// messages to one channel, each waiting for its ack, while a subscriber
// receives them all. It reports acked publications per second; the
// channel's owner orders them, with a backup on another node.
func BenchmarkConcurrentPublish(b *testing.B) {
	_, bs := newTestCluster(b, 3, nil)
	ctx := b.Context()
	recs := make([]*counter, len(bs))
	for i, br := range bs {
		recs[i] = &counter{}
		if err := br.Start(ctx, recs[i]); err != nil {
			b.Fatal(err)
		}
	}
	ch, _ := channelOwnedBy(b, bs, 0)
	if err := bs[1].Subscribe(ctx, ch); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"type":"message","room":"bench","from":"alice","text":"hello, world"}`)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		from := bs[1+next.Add(1)%2]
		for pb.Next() {
			if _, err := from.Publish(ctx, ch, data, transport.PublishOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	brokertest.Eventually(b, "every publication delivered", func() bool { return recs[1].n.Load() >= int64(b.N) })
}
