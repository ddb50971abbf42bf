package redis_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/redis"
)

// counts is an observer per command name.
type counts struct {
	mu sync.Mutex
	by map[string]*atomic.Int64
}

type counter struct{ n *atomic.Int64 }

func (c counter) Observe(float64) { c.n.Add(1) }

func newCounts() *counts { return &counts{by: map[string]*atomic.Int64{}} }

func (c *counts) observer(name string) transport.Observer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by[name] != nil {
		panic("observer asked twice for " + name)
	}
	c.by[name] = new(atomic.Int64)
	return counter{c.by[name]}
}

func (c *counts) get(name string) int64 { return c.by[name].Load() }

// TestCommandHook: the broker's scripts are observed by name, a
// pipeline as one, and a command outside the list as "other".
func TestCommandHook(t *testing.T) {
	srv := redistest.Start(t)
	obs := newCounts()
	hook := redis.NewCommandHook(obs.observer)
	if len(obs.by) != len(redis.Commands) {
		t.Fatalf("%d observers for %d names", len(obs.by), len(redis.Commands))
	}
	bs := cluster(t, srv, 1, func(c *redis.Config) { c.Hook = hook })
	brokertest.StartAll(t, bs...)
	ctx := t.Context()
	for range 3 {
		if _, err := bs[0].Publish(ctx, "r:hook", []byte("m"), transport.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bs[0].History(ctx, "r:hook", transport.HistoryRequest{Limit: 10}); err != nil {
		t.Fatal(err)
	}
	if err := bs[0].AddPresence(ctx, "r:hook", "alice"); err != nil {
		t.Fatal(err)
	}
	// A script's first EVALSHA may be answered NOSCRIPT and followed by
	// an EVAL: each attempt counts, the EVALSHA under the script's name.
	if n := obs.get("publish_script"); n < 3 {
		t.Errorf("publish script observed %d times, want at least 3", n)
	}
	if obs.get("history_script") == 0 {
		t.Error("history script not observed")
	}
	if obs.get("pipeline") == 0 {
		t.Error("presence's pipeline not observed")
	}

	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	c.AddHook(hook)
	pings := obs.get("ping")
	if err := c.Ping(ctx).Err(); err != nil { // connects: the handshake's commands count too
		t.Fatal(err)
	}
	before := obs.get(redis.OtherCommand)
	if err := c.Do(ctx, "ECHO", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if obs.get(redis.OtherCommand) != before+1 || obs.get("ping") != pings+1 {
		t.Errorf("ECHO as other: %d -> %d; ping: %d -> %d", before, obs.get(redis.OtherCommand), pings, obs.get("ping"))
	}
}

// TestCommandHookAllocs: observing a command allocates nothing.
func TestCommandHookAllocs(t *testing.T) {
	hook := redis.NewCommandHook(newCounts().observer)
	process := hook.ProcessHook(func(context.Context, goredis.Cmder) error { return nil })
	pipeline := hook.ProcessPipelineHook(func(context.Context, []goredis.Cmder) error { return nil })
	ctx := context.Background()
	cmds := []goredis.Cmder{
		goredis.NewCmd(ctx, "evalsha", "0123", 0),
		goredis.NewCmd(ctx, "get", "k"),
		goredis.NewCmd(ctx, "object", "freq", "k"),
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, c := range cmds {
			_ = process(ctx, c)
		}
		_ = pipeline(ctx, cmds)
	}); n != 0 {
		t.Errorf("%v allocations per observed command", n)
	}
}

func BenchmarkPublishDeliverHooked(b *testing.B) {
	srv := redistest.Start(b)
	hook := redis.NewCommandHook(func(string) transport.Observer { return nopObserver{} })
	brokertest.Bench(b, func(b *testing.B, n int) []transport.Broker {
		return asBrokers(cluster(b, srv, n, func(c *redis.Config) { c.Logger, c.Hook = nil, hook }))
	})
}

type nopObserver struct{}

func (nopObserver) Observe(float64) {}
