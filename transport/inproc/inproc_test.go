package inproc_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/inproc"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// newBroker returns a broker closed at cleanup.
func newBroker(tb testing.TB, cfg inproc.Config) *inproc.Broker {
	tb.Helper()
	b, err := inproc.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// cluster returns n brokers on one fresh Network.
func cluster(tb testing.TB, n int) []transport.Broker {
	tb.Helper()
	network := inproc.NewNetwork()
	out := make([]transport.Broker, n)
	for i := range out {
		out[i] = newBroker(tb, inproc.Config{
			HistorySize: brokertest.HistorySize,
			Node:        "n" + strconv.Itoa(i),
			Network:     network,
		})
	}
	return out
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, n int) []transport.Broker { return cluster(t, n) })
}

func BenchmarkPublishDeliver(b *testing.B) {
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker { return cluster(b, n) })
}

func TestNewValidates(t *testing.T) {
	network := inproc.NewNetwork()
	if _, err := inproc.New(inproc.Config{Node: "a", Network: network}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  inproc.Config
		want error
	}{
		{"negative history", inproc.Config{HistorySize: -1}, nil},
		{"negative age", inproc.Config{HistoryMaxAge: -time.Second}, nil},
		{"negative dedupe", inproc.Config{DedupeWindow: -time.Second}, nil},
		{"node taken", inproc.Config{Node: "a", Network: network}, inproc.ErrNodeTaken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inproc.New(tc.cfg)
			if err == nil {
				t.Fatal("New accepted an invalid config")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStart(t *testing.T) {
	b, err := inproc.New(inproc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Start(ctx, nil); !errors.Is(err, inproc.ErrNoHandler) {
		t.Fatalf("Start(nil): %v", err)
	}
	rec := brokertest.NewRecorder()
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, rec); !errors.Is(err, inproc.ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, rec); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

func TestHistoryMaxAge(t *testing.T) {
	const age = 50 * time.Millisecond
	b := newBroker(t, inproc.Config{HistoryMaxAge: age})
	ctx := context.Background()
	old, err := b.Publish(ctx, "r:age", []byte("old"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "the first publication to age out", func() bool {
		return time.Now().UnixMilli() > old.Time+age.Milliseconds()
	})
	if _, err := b.Publish(ctx, "r:age", []byte("new"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := b.History(ctx, "r:age", transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 0, Epoch: old.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || len(res.Publications) != 1 || res.Publications[0].Offset != 2 {
		t.Fatalf("after age-out: recovered %v, %+v", res.Recovered, res.Publications)
	}
}

func TestCloseRemovesPresence(t *testing.T) {
	network := inproc.NewNetwork()
	ctx := context.Background()
	a := newBroker(t, inproc.Config{Node: "a", Network: network})
	b := newBroker(t, inproc.Config{Node: "b", Network: network})
	if err := a.AddPresence(ctx, "r:x", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := b.Presence(ctx, "r:x")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("presence of a closed node survived: %v", got)
	}
	// Its name is free again.
	if _, err := inproc.New(inproc.Config{Node: a.Node(), Network: network}); err != nil {
		t.Fatal(err)
	}
}

func TestDedupeWindowExpires(t *testing.T) {
	const window = 30 * time.Millisecond
	b := newBroker(t, inproc.Config{DedupeWindow: window})
	ctx := context.Background()
	opts := transport.PublishOptions{IdempotencyKey: "k"}
	first, err := b.Publish(ctx, "r:d", []byte("x"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var again transport.Publication
	brokertest.Eventually(t, "the idempotency key to expire", func() bool {
		again, err = b.Publish(ctx, "r:d", []byte("x"), opts)
		return err != nil || again.Offset != first.Offset
	})
	if err != nil || again.Offset != first.Offset+1 {
		t.Fatalf("after the window: %+v, %v", again, err)
	}
}
