// Package nodetest is the test kit's node harness: whole meshchat nodes
// (package node) on 127.0.0.1 with free ports, alone or as a cluster, with
// their logs shown only when the test fails. Every test that needs a whole
// node in its own process uses it, instead of wiring hub, broker and web
// server again.
package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/web"
)

// Secret is the cluster secret of every test node.
const Secret = "meshchat-test-secret-0123456789abcdef"

// Logger returns a debug-level logger whose output the test prints only
// when it fails: passing runs stay quiet, failing ones show everything.
// (Writing to t.Log directly would race with goroutines that outlive a
// subtest.)
func Logger(tb testing.TB) *slog.Logger {
	l := &clustertest.Buffer{}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("node logs:\n%s", l.String())
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Config is a node named name on 127.0.0.1 with free ports, the test
// secret and a Logger, logging users in by name (--auth open; set Auth
// to "password" for accounts, which then hash cheaply and allow many
// attempts from one address), without the per-address connection cap
// (every test client comes from 127.0.0.1); the rest is node's defaults.
func Config(tb testing.TB, name, broker, redisURL string, join ...string) node.Config {
	return node.Config{
		HTTPAddr:        "127.0.0.1:0",
		GossipAddr:      "127.0.0.1:0",
		Name:            name,
		Broker:          broker,
		RedisURL:        redisURL,
		Secret:          Secret,
		Join:            join,
		Logger:          Logger(tb),
		ShutdownTimeout: 10 * time.Second,
		Auth:            "open",
		MaxConnsPerIP:   node.NoConnLimit,
		PasswordParams:  store.TestPasswordParams,
		AuthLimits: web.AuthLimits{
			AttemptsPerMinute: 6000, AttemptBurst: 1000,
			RegistrationsPerMinute: 6000, RegistrationBurst: 1000,
		},
	}
}

// Start starts a node and stops it gracefully when the test ends.
func Start(tb testing.TB, cfg node.Config) *node.Node {
	tb.Helper()
	n, err := node.New(cfg)
	if err != nil {
		tb.Fatalf("node.New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		tb.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	clustertest.Cleanup(tb, "stop "+cfg.Name, n.Stop)
	return n
}

// Options shape StartCluster.
type Options struct {
	Broker   string // "mesh" (default) or "redis"
	RedisURL string
	// Adjust, when set, changes node i's config before it starts.
	Adjust func(i int, cfg *node.Config)
}

// StartCluster starts size nodes n1..nN as a node.Group (all joined
// through n1), stops them when the test ends, and waits until every node
// sees every other alive and is ready.
func StartCluster(tb testing.TB, size int, o Options) []*node.Node {
	tb.Helper()
	cfgs := make([]node.Config, size)
	for i := range cfgs {
		cfgs[i] = Config(tb, fmt.Sprintf("n%d", i+1), o.Broker, o.RedisURL)
		if o.Adjust != nil {
			o.Adjust(i, &cfgs[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Duration(size)*time.Second)
	defer cancel()
	g, err := node.StartGroup(ctx, cfgs)
	if err != nil {
		tb.Fatal(err)
	}
	clustertest.Cleanup(tb, "stop cluster", g.Stop)
	WaitConverged(tb, 20*time.Second, g.Nodes...)
	return g.Nodes
}

// WaitConverged waits until every node sees all of nodes alive and is
// ready.
func WaitConverged(tb testing.TB, timeout time.Duration, nodes ...*node.Node) {
	tb.Helper()
	clustertest.WaitFor(tb, timeout, "cluster to converge", func() bool {
		for _, n := range nodes {
			if len(n.Cluster().Alive()) != len(nodes) {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := n.Ready(ctx)
			cancel()
			if err != nil {
				return false
			}
		}
		return true
	})
}

// Stop stops n gracefully, as a deploy does: its clients are told to go
// elsewhere (1012), then it leaves the cluster.
func Stop(tb testing.TB, n *node.Node) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		tb.Errorf("stop %s: %v", n.Name(), err)
	}
}

// URLs are the nodes' advertised base URLs.
func URLs(nodes []*node.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.URL()
	}
	return out
}
