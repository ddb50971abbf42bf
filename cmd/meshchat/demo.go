package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/freeport"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
)

// demoConfig is the demo command line.
type demoConfig struct {
	Nodes    int
	Broker   string
	RedisURL string
	Host     string
	BasePort int
	Secret   string
	LogLevel slog.Level
}

func parseDemo(args []string, lookupEnv func(string) (string, bool), out io.Writer) (demoConfig, error) {
	dc := demoConfig{Nodes: 3, Broker: "mesh", Host: "127.0.0.1", BasePort: 8081, LogLevel: slog.LevelWarn}
	fs := flag.NewFlagSet("meshchat demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&dc.Nodes, "nodes", dc.Nodes, "number of nodes")
	fs.StringVar(&dc.Broker, "broker", dc.Broker, "mesh or redis")
	fs.StringVar(&dc.RedisURL, "redis", dc.RedisURL, "Redis URL; needed with --broker redis")
	fs.StringVar(&dc.Host, "host", dc.Host, "address every node listens on")
	fs.IntVar(&dc.BasePort, "base-port", dc.BasePort, "first HTTP port; gossip ports start at base-port+1000")
	fs.StringVar(&dc.Secret, "secret", dc.Secret, "cluster secret")
	fs.Var(levelValue{&dc.LogLevel}, "log-level", "log level: debug, info, warn or error")
	docs := []flagDoc{
		{"nodes", "N", ""}, {"broker", "NAME", ""}, {"redis", "URL", "none"}, {"host", "HOST", ""},
		{"base-port", "P", ""}, {"secret", "S", "the public insecure default"}, {"log-level", "LEVEL", ""},
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, `Usage: meshchat demo [flags]

Runs several nodes in this one process, joined into one cluster, on
consecutive free ports of --host: HTTP from --base-port, gossip from
--base-port+1000. Prints the URLs to open; Ctrl-C stops every node.
--broker, --redis and --secret also read MESHCHAT_BROKER, MESHCHAT_REDIS
and MESHCHAT_SECRET.

Flags:
`)
			printFlags(out, fs, docs, false)
			return demoConfig{}, flag.ErrHelp
		}
		return demoConfig{}, fmt.Errorf("demo: %w", err)
	}
	if fs.NArg() > 0 {
		return demoConfig{}, fmt.Errorf("demo: unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range []string{"broker", "redis", "secret"} {
		if v, ok := lookupEnv(envName(name)); ok && v != "" && !given[name] {
			_ = fs.Set(name, v)
		}
	}
	switch {
	case dc.Nodes < 1 || dc.Nodes > 50:
		return demoConfig{}, fmt.Errorf("demo: --nodes %d: want 1 to 50", dc.Nodes)
	case dc.BasePort < 1 || dc.BasePort+1000+dc.Nodes*4 > 65535:
		return demoConfig{}, fmt.Errorf("demo: --base-port %d out of range", dc.BasePort)
	case dc.Broker != "mesh" && dc.Broker != "redis":
		return demoConfig{}, fmt.Errorf("demo: --broker %q: want mesh or redis", dc.Broker)
	case dc.Broker == "redis" && dc.RedisURL == "":
		return demoConfig{}, errors.New("demo: --broker redis needs --redis URL (or MESHCHAT_REDIS)")
	}
	return dc, nil
}

// runDemo starts the demo cluster, prints where to find it and waits for
// ctx (Ctrl-C).
func runDemo(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	dc, err := parseDemo(args, lookupEnv, stdout)
	if err != nil {
		return usageError(err)
	}
	log := newLogger(stderr, dc.LogLevel, "text")
	routeRedisLogs(log)
	secret := dc.Secret
	if secret == "" {
		log.Warn("demo uses the public default secret; fine on 127.0.0.1, unsafe on a shared network")
		secret = node.DefaultSecret
	}

	var ports freeport.Set
	httpPort, gossipPort := dc.BasePort, dc.BasePort+1000
	cfgs := make([]node.Config, dc.Nodes)
	for i := range cfgs {
		var herr, gerr error
		httpPort, herr = ports.Next(dc.Host, httpPort, false)
		gossipPort, gerr = ports.Next(dc.Host, gossipPort, true)
		if herr != nil || gerr != nil {
			return errors.New("demo: ran out of free ports")
		}
		cfgs[i] = node.Config{
			HTTPAddr:   net.JoinHostPort(dc.Host, strconv.Itoa(httpPort)),
			GossipAddr: net.JoinHostPort(dc.Host, strconv.Itoa(gossipPort)),
			Name:       fmt.Sprintf("n%d", i+1),
			Broker:     dc.Broker,
			RedisURL:   dc.RedisURL,
			Secret:     secret,
			Logger:     log,
			TagLogs:    true,
		}
	}
	g, err := node.StartGroup(ctx, cfgs)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	stopAll := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), node.DefaultShutdownTimeout)
		defer cancel()
		return g.Stop(sctx)
	}

	// Wait until every node sees the whole cluster, so the printed URLs
	// work as a cluster from the first click.
	deadline := time.Now().Add(15 * time.Second)
	for !g.Converged() && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !g.Converged() && ctx.Err() == nil {
		log.Warn("nodes have not all seen each other yet; they keep trying")
	}

	nodes := g.Nodes
	fmt.Fprintf(stdout, "meshchat demo: %d nodes, broker %s. Open any of:\n", len(nodes), dc.Broker)
	for _, n := range nodes {
		fmt.Fprintf(stdout, "  %s   node %s, gossip %s\n", n.URL(), n.Name(), n.GossipAddr())
	}
	fmt.Fprintf(stdout, "Cluster view: %s/api/cluster\nCtrl-C stops all nodes.\n", nodes[0].URL())

	var failed error
	select {
	case <-ctx.Done():
	case failed = <-g.Failed():
	}
	stop()
	fmt.Fprintln(stdout, "meshchat demo: stopping")
	return errors.Join(failed, stopAll())
}
