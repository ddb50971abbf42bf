package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/freeport"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
)

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
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return fmt.Errorf("demo: make a secret: %w", err)
		}
		secret = hex.EncodeToString(raw[:]) // shared by this process's nodes only
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
			Auth:       dc.Auth,
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
