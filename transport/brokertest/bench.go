package brokertest

import (
	"slices"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// BenchFactory returns n unstarted brokers of one cluster and registers
// their cleanup with b.
type BenchFactory func(b *testing.B, nodes int) []transport.Broker

// maxSamples bounds the latency samples kept per benchmark run, so that
// recording them does not allocate inside the timed loop.
const maxSamples = 1 << 16

// Bench measures publish-to-delivery latency: node 0 publishes, node 1
// (subscribed) receives, one publication in flight at a time. It reports
// allocations and the p50/p99 latency besides ns/op. Sub-benchmarks cover
// stored and ephemeral publications.
func Bench(b *testing.B, f BenchFactory) {
	for _, mode := range []struct {
		name string
		opts transport.PublishOptions
	}{
		{"stored", transport.PublishOptions{}},
		{"ephemeral", transport.PublishOptions{Ephemeral: true}},
	} {
		b.Run(mode.name, func(b *testing.B) { benchPublishDeliver(b, f, mode.opts) })
	}
}

// signal is a Handler that never blocks: it drops when its buffer is full,
// which cannot happen with one publication in flight.
type signal chan struct{}

func (s signal) HandlePublication(string, transport.Publication) {
	select {
	case s <- struct{}{}:
	default:
	}
}

func benchPublishDeliver(b *testing.B, f BenchFactory, opts transport.PublishOptions) {
	brokers := f(b, 2)
	if len(brokers) != 2 {
		b.Fatalf("factory returned %d brokers, want 2", len(brokers))
	}
	ctx := b.Context()
	got := make(signal, 16)
	if err := brokers[0].Start(ctx, make(signal, 1)); err != nil {
		b.Fatal(err)
	}
	if err := brokers[1].Start(ctx, got); err != nil {
		b.Fatal(err)
	}
	ch := channelName("r:bench")
	if err := brokers[1].Subscribe(ctx, ch); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"type":"message","room":"bench","from":"alice","text":"hello, world"}`)
	samples := make([]time.Duration, 0, maxSamples)
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()

	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		start := time.Now()
		if _, err := brokers[0].Publish(ctx, ch, data, opts); err != nil {
			b.Fatal(err)
		}
		timer.Reset(WaitTimeout)
		select {
		case <-got:
		case <-timer.C:
			b.Fatalf("no delivery within %v", WaitTimeout)
		}
		if len(samples) < maxSamples {
			samples = append(samples, time.Since(start))
		}
	}
	b.StopTimer()
	if len(samples) > 0 {
		slices.Sort(samples)
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	}
}
