package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Group is several nodes of one cluster in one process, as the demo and
// tests run them: every node after the first joins the first, and they
// stop newest first, so that each one's leave reaches peers that are still
// up and nobody waits for failure detection.
type Group struct {
	Nodes []*Node
}

// StartGroup starts a node for each config, in order; every node after the
// first also joins the first one's gossip address. On error, the nodes
// already started are stopped.
func StartGroup(ctx context.Context, cfgs []Config) (*Group, error) {
	g := &Group{}
	for i, cfg := range cfgs {
		if i > 0 {
			cfg.Join = append(slices.Clone(cfg.Join), g.Nodes[0].GossipAddr())
		}
		n, err := New(cfg)
		if err == nil {
			err = n.Start(ctx)
		}
		if err != nil {
			// The start's ctx may be what ended it: stop with a bound
			// of our own, so the nodes already up still leave cleanly.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultShutdownTimeout)
			defer cancel()
			return nil, errors.Join(fmt.Errorf("node %d (%s): %w", i+1, cfg.Name, err), g.Stop(sctx))
		}
		g.Nodes = append(g.Nodes, n)
	}
	return g, nil
}

// Converged reports whether every node of the group sees all of them
// alive.
func (g *Group) Converged() bool {
	for _, n := range g.Nodes {
		if len(n.Cluster().Alive()) != len(g.Nodes) {
			return false
		}
	}
	return true
}

// Failed receives the first error of a node whose HTTP server stopped on
// its own. Its goroutines end when a node fails or, once the group has
// stopped, when Stop drains the servers.
func (g *Group) Failed() <-chan error {
	out := make(chan error, len(g.Nodes))
	for _, n := range g.Nodes {
		go func() {
			if err, ok := <-n.Done(); ok {
				out <- err
			}
		}()
	}
	return out
}

// Stop stops every node gracefully, newest first.
func (g *Group) Stop(ctx context.Context) error {
	var errs []error
	for _, n := range slices.Backward(g.Nodes) {
		errs = append(errs, n.Stop(ctx))
	}
	return errors.Join(errs...)
}
