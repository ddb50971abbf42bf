package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Stop shuts the node down gracefully: stop accepting connections, tell
// WebSocket clients to reconnect elsewhere (close code 1012), release the
// hub's presence and subscriptions, leave the cluster so peers re-route at
// once, then close the broker and gossip. Later calls return the first
// call's result.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx, true) })
	return n.stopErr
}

// Kill stops the node the way a crash would look to its peers as closely
// as one process allows: gossip stops without a leave message and the
// broker closes before the hub can tidy up, so peers must detect the death
// themselves. Tests use it; Start uses it to undo a partial start.
func (n *Node) Kill(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx, false) })
	return n.stopErr
}

func (n *Node) stop(ctx context.Context, graceful bool) error {
	n.stopping.Store(true)
	began := time.Now()
	var errs []error
	// step runs one stage of the stop and logs how long it took, so a slow
	// shutdown shows where it waited.
	step := func(name string, fn func() error) {
		t0 := time.Now()
		err := fn()
		n.log.Debug("stop step", "step", name, "took", time.Since(t0), "err", err)
		if err != nil {
			errs = append(errs, fmt.Errorf("node: %s: %w", name, err))
		}
	}
	if !graceful {
		if n.cluster != nil {
			step("cluster shutdown", func() error { return n.cluster.Shutdown(ctx) })
		}
		if n.broker != nil {
			step("broker close", func() error { return n.broker.Close(ctx) })
		}
	}

	// Stop accepting: Shutdown closes the listener at once, then waits for
	// in-flight requests (node-to-node calls among them) while we go on.
	shutdownDone := make(chan error, 1)
	if n.srv != nil {
		go func() { shutdownDone <- n.srv.Shutdown(ctx) }()
		select {
		case <-n.ln.closed:
		case <-ctx.Done():
		}
	} else {
		if n.ln != nil {
			_ = n.ln.Close()
		}
		shutdownDone <- nil
	}
	if n.web != nil {
		step("web shutdown", func() error { return n.web.Shutdown(ctx) })
	}
	if n.hub != nil {
		step("hub shutdown", func() error { return n.hub.Shutdown(ctx) })
	}
	if n.revoked != nil {
		step("revocations shutdown", func() error { return n.revoked.Shutdown(ctx) })
	}
	if n.accounts != nil {
		step("accounts shutdown", func() error { return n.accounts.Shutdown(ctx) })
	}
	if n.rooms != nil {
		step("rooms shutdown", func() error { return n.rooms.Shutdown(ctx) })
	}
	if graceful && n.cluster != nil && n.cluster.BindAddr() != "" {
		step("cluster leave", func() error {
			lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := n.cluster.Leave(lctx); err != nil {
				n.log.Warn("cluster leave failed; peers will detect the node as dead", "err", err)
			}
			return nil
		})
	}
	if graceful && n.broker != nil {
		step("broker close", func() error { return n.broker.Close(ctx) })
	}
	step("http shutdown", func() error {
		var err error
		select {
		case err = <-shutdownDone:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil && n.srv != nil {
			_ = n.srv.Close()
		}
		n.serveWG.Wait()
		close(n.served)
		return err
	})
	if graceful && n.cluster != nil {
		step("cluster shutdown", func() error { return n.cluster.Shutdown(ctx) })
	}
	if n.history != nil {
		// After the broker: it writes to the log until Close returns.
		step("history close", n.history.Close)
	}
	if n.rdb != nil {
		step("redis close", n.rdb.Close)
	}
	if n.debug != nil {
		step("debug close", n.debug.close)
	}
	if n.metricsSrv != nil {
		step("metrics close", n.metricsSrv.close)
	}
	if n.certs != nil {
		step("tls reload stop", func() error { n.certs.close(); return nil })
	}
	n.log.Debug("node stopped", "graceful", graceful, "took", time.Since(began))
	return errors.Join(errs...)
}

// closeNotifyListener reports when the listener has been closed, so Stop
// can go on with the next step as soon as no new connection can arrive.
type closeNotifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}
