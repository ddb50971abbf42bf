package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/redis"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// prefixes keeps the clusters of one test binary apart on a shared server.
var prefixes atomic.Int64

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ tb testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p))
	return len(p), nil
}

// configs returns the configs of an n-node cluster on srv, with a key
// prefix of its own.
func configs(tb testing.TB, srv *redistest.Server, n int, tweak func(*redis.Config)) []redis.Config {
	prefix := "t" + strconv.FormatInt(prefixes.Add(1), 10) + ":"
	out := make([]redis.Config, n)
	for i := range out {
		out[i] = redis.Config{
			URL:         srv.URL(),
			Node:        "n" + strconv.Itoa(i),
			HistorySize: brokertest.HistorySize,
			KeyPrefix:   prefix,
			Logger:      testLogger(tb),
		}
		if tweak != nil {
			tweak(&out[i])
		}
	}
	return out
}

// newBroker returns a broker closed at cleanup.
func newBroker(tb testing.TB, cfg redis.Config) *redis.Broker {
	tb.Helper()
	b, err := redis.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return b
}

// cluster returns n brokers of one cluster on srv, closed at cleanup.
func cluster(tb testing.TB, srv *redistest.Server, n int, tweak func(*redis.Config)) []*redis.Broker {
	tb.Helper()
	var out []*redis.Broker
	for _, cfg := range configs(tb, srv, n, tweak) {
		out = append(out, newBroker(tb, cfg))
	}
	return out
}

// startSubscribed starts a cluster of n nodes on srv, each with a recorder
// of its own, and subscribes the nodes subs to ch.
func startSubscribed(t *testing.T, srv *redistest.Server, n int, ch string, subs ...int) ([]*redis.Broker, []*brokertest.Recorder) {
	t.Helper()
	bs := cluster(t, srv, n, nil)
	recs := brokertest.StartAll(t, bs...)
	for _, i := range subs {
		if err := bs[i].Subscribe(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	return bs, recs
}

// adminClient is a client of srv of the test's own, for what the brokers
// do not offer (killing connections, reading keys).
func adminClient(t *testing.T, srv *redistest.Server) *goredis.Client {
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	return admin
}

func asBrokers(bs []*redis.Broker) []transport.Broker {
	out := make([]transport.Broker, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	brokertest.Run(t, func(t *testing.T, n int) []transport.Broker {
		return asBrokers(cluster(t, srv, n, nil))
	})
}

func BenchmarkPublishDeliver(b *testing.B) {
	srv := redistest.Start(b)
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker {
		return asBrokers(cluster(b, srv, n, func(c *redis.Config) { c.Logger = nil }))
	})
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  redis.Config
		want error
	}{
		{"no URL", redis.Config{}, redis.ErrNoURL},
		{"bad URL", redis.Config{URL: "http://x"}, nil},
		{"negative history", redis.Config{URL: "redis://127.0.0.1:1/0", HistorySize: -1}, nil},
		{"negative age", redis.Config{URL: "redis://127.0.0.1:1/0", HistoryMaxAge: -time.Second}, nil},
		{"negative dedupe", redis.Config{URL: "redis://127.0.0.1:1/0", DedupeWindow: -time.Second}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := redis.New(tc.cfg)
			if err == nil {
				_ = b.Close(context.Background())
				t.Fatal("New accepted an invalid config")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := redis.New(redis.Config{}); err == nil || err.Error() != "redis broker: no URL" {
		t.Fatalf("missing URL error reads %v", err)
	}
}

// TestOutage stops Redis under a running cluster: operations fail with
// ErrUnavailable, nothing crashes, and once Redis is back (with its data)
// publishing works again and subscriptions resume, including what was
// published while one node's connection was down.
func TestOutage(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Persist: true})
	const ch = "r:outage"
	bs, recs := startSubscribed(t, srv, 2, ch, 0, 1)
	ctx := t.Context()
	first, err := bs[0].Publish(ctx, ch, []byte("before"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recs[1].WaitN(t, ch, 1)

	srv.Stop()
	if _, err := bs[0].Publish(ctx, ch, []byte("during"), transport.PublishOptions{}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("Publish while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := bs[0].Publish(ctx, ch, []byte("during"), transport.PublishOptions{Ephemeral: true}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("ephemeral Publish while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := bs[1].History(ctx, ch, transport.HistoryRequest{}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("History while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := bs[1].AddPresence(ctx, ch, "alice"); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("AddPresence while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := bs[1].Presence(ctx, ch); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("Presence while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := bs[1].Subscribe(ctx, "r:other"); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("Subscribe while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := bs[0].Ping(ctx); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("Ping while Redis is down: %v", err)
	}

	srv.Restart()
	brokertest.Eventually(t, "Ping to succeed after restart", func() bool { return bs[0].Ping(ctx) == nil })

	// Publish until it is accepted: the first attempts may still meet
	// connections from before the outage.
	var second transport.Publication
	brokertest.Eventually(t, "Publish to succeed after restart", func() bool {
		second, err = bs[0].Publish(ctx, ch, []byte("after"), transport.PublishOptions{})
		return err == nil
	})
	if second.Epoch != first.Epoch || second.Offset != first.Offset+1 {
		t.Fatalf("after restart got %d@%s, want %d@%s (Redis kept its data)", second.Offset, second.Epoch, first.Offset+1, first.Epoch)
	}
	// Both nodes get it: go-redis resubscribed and the gap (none here, or
	// whatever the reconnect raced with) is filled from history.
	for i, rec := range recs {
		got := rec.WaitN(t, ch, 2)
		if len(got) != 2 || got[1].Offset != second.Offset {
			t.Fatalf("node %d got %+v after restart", i, got)
		}
	}
}

// TestGapFilledFromHistory drops the subscriber's pub/sub connections
// from the server side and publishes before they reconnect: the
// subscriber must still see every publication once, in order, filled from
// history. That holds too for a channel nothing was published on before
// the drop.
func TestGapFilledFromHistory(t *testing.T) {
	for _, tc := range []struct {
		name             string
		before           int // publications delivered before the first drop
		rounds, perRound int // drops, and publications after each
	}{
		{"after publications", 1, 3, 5},
		{"before the first publication", 0, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			const ch = "r:gap"
			bs, recs := startSubscribed(t, srv, 2, ch, 1)
			rec, ctx := recs[1], t.Context()
			n := 0
			publish := func(data string) transport.Publication {
				t.Helper()
				p, err := bs[0].Publish(ctx, ch, []byte(data), transport.PublishOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			for range tc.before {
				n++
				publish("m" + strconv.Itoa(n))
			}
			rec.WaitN(t, ch, n)

			admin := adminClient(t, srv)
			for range tc.rounds {
				if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
					t.Fatal(err)
				}
				for range tc.perRound {
					n++
					publish("m" + strconv.Itoa(n))
				}
			}
			got := rec.WaitN(t, ch, n)
			for i, p := range got {
				if p.Offset != uint64(i+1) || string(p.Data) != fmt.Sprintf("m%d", i+1) {
					t.Fatalf("delivery %d is %d %q: want every publication once, in order", i, p.Offset, p.Data)
				}
			}
			// Nothing more arrives later (no duplicates from pub/sub racing
			// the fill): a marker published last is the next thing delivered.
			marker := publish("marker")
			got = rec.WaitN(t, ch, int(marker.Offset))
			if len(got) != int(marker.Offset) || got[len(got)-1].Offset != marker.Offset {
				t.Fatalf("after the marker: %d deliveries, last offset %d", len(got), got[len(got)-1].Offset)
			}
		})
	}
}

// TestDataLoss restarts Redis without persistence: the channel gets a new
// epoch, old positions are not recoverable, and delivery carries on.
func TestDataLoss(t *testing.T) {
	srv := redistest.Start(t)
	const ch = "r:loss"
	bs, recs := startSubscribed(t, srv, 1, ch, 0)
	rec, ctx := recs[0], t.Context()
	old, err := bs[0].Publish(ctx, ch, []byte("old"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec.WaitN(t, ch, 1)
	srv.Restart()
	var fresh transport.Publication
	brokertest.Eventually(t, "Publish after restart", func() bool {
		fresh, err = bs[0].Publish(ctx, ch, []byte("new"), transport.PublishOptions{})
		return err == nil
	})
	if fresh.Epoch == old.Epoch || fresh.Offset != 1 {
		t.Fatalf("after data loss got %d@%s, old was %d@%s: want offset 1 in a new epoch", fresh.Offset, fresh.Epoch, old.Offset, old.Epoch)
	}
	res, err := bs[0].History(ctx, ch, transport.HistoryRequest{Since: &transport.StreamPosition{Offset: old.Offset, Epoch: old.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || len(res.Publications) != 1 || res.Publications[0].Offset != 1 {
		t.Fatalf("history since an old-epoch position: %+v", res)
	}
	got := rec.WaitN(t, ch, 2)
	if got[1].Epoch != fresh.Epoch || got[1].Offset != 1 {
		t.Fatalf("delivered %+v after data loss", got[1])
	}
}

func TestPresenceAliveAndRestart(t *testing.T) {
	srv := redistest.Start(t)
	var alive atomic.Value
	alive.Store([]string{"n0", "n1"})
	aliveFn := func(c *redis.Config) { c.Alive = func() []string { return alive.Load().([]string) } }
	cfgs := configs(t, srv, 2, aliveFn)
	bs := []*redis.Broker{newBroker(t, cfgs[0]), newBroker(t, cfgs[1])}
	brokertest.StartAll(t, bs...)
	ctx := t.Context()
	const ch = "r:pres"
	for _, b := range bs {
		if err := b.AddPresence(ctx, ch, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	check := func(b *redis.Broker, want ...string) {
		t.Helper()
		got, err := b.Presence(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got["alice"]) != fmt.Sprint(want) {
			t.Fatalf("alice on %v, want %v", got["alice"], want)
		}
	}
	check(bs[0], "n0", "n1")
	alive.Store([]string{"n0"})
	check(bs[0], "n0")
	alive.Store([]string{"n0", "n1"})

	// A new run of n1 (same name, same prefix) starting after a crash
	// clears what the previous run left. Simulate the crash by starting a
	// second broker with n1's config without closing the first.
	n1again := newBroker(t, cfgs[1])
	brokertest.StartAll(t, n1again)
	check(bs[0], "n0")

	// A graceful Close removes the node's own entries.
	if err := bs[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := n1again.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("presence after n0 closed and n1 restarted: %v", got)
	}
}

func TestHistoryMaxAge(t *testing.T) {
	const age = 200 * time.Millisecond
	srv := redistest.Start(t)
	b := cluster(t, srv, 1, func(c *redis.Config) { c.HistoryMaxAge = age })[0]
	brokertest.StartAll(t, b)
	ctx := t.Context()
	const ch = "r:age"
	var pubs []transport.Publication
	for i := range 3 {
		p, err := b.Publish(ctx, ch, []byte("old"+strconv.Itoa(i)), transport.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	aged := func() bool { return time.Now().UnixMilli() > pubs[2].Time+age.Milliseconds()+50 }
	brokertest.Eventually(t, "the publications to age out", aged)

	// Reads ignore aged entries even before a publish trims them.
	res, err := b.History(ctx, ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Publications) != 0 || res.Latest.Offset != 3 {
		t.Fatalf("history after age-out: %+v", res)
	}
	fresh, err := b.Publish(ctx, ch, []byte("new"), transport.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Offset != 4 || fresh.Epoch != pubs[0].Epoch {
		t.Fatalf("publication after age-out: %d@%s, want 4@%s", fresh.Offset, fresh.Epoch, pubs[0].Epoch)
	}
	// The publish trimmed the aged entries from the stream itself.
	admin := adminClient(t, srv)
	keys, err := admin.Keys(ctx, "*{"+ch+"}:history").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("history keys %v, %v", keys, err)
	}
	if n, err := admin.XLen(ctx, keys[0]).Result(); err != nil || n != 1 {
		t.Fatalf("stream length %d (%v) after trimming, want 1", n, err)
	}
	res, err = b.History(ctx, ch, transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 1, Epoch: fresh.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Recovered || len(res.Publications) != 1 || res.Publications[0].Offset != 4 {
		t.Fatalf("since an aged-out position: %+v", res)
	}
	res, err = b.History(ctx, ch, transport.HistoryRequest{Since: &transport.StreamPosition{Offset: 3, Epoch: fresh.Epoch}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Recovered || len(res.Publications) != 1 {
		t.Fatalf("since the last aged-out position: %+v", res)
	}
}
