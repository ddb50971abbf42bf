package node

import (
	"context"
	"fmt"
	"time"

	"github.com/meshchat/meshchat/cluster"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/web"
)

// onClusterEvent runs on the cluster's event goroutine.
func (n *Node) onClusterEvent(ev cluster.Event) {
	n.seenMu.Lock()
	n.seen[ev.Node.Name] = ev.Kind == cluster.EventJoin || ev.Kind == cluster.EventUpdate
	n.seenMu.Unlock()
	n.updatePeerIPs()
	if n.mesh != nil {
		n.mesh.PeersChanged()
	}
	if (ev.Kind == cluster.EventDead || ev.Kind == cluster.EventLeave) && ev.Node.Name != n.name {
		n.hub.NodeGone(ev.Node.Name)
	}
}

// Ready reports whether the node can serve (it is /readyz): Redis (with
// --redis) answers, the cluster is joined, the mesh broker has the
// quorum, logouts are loaded, the first membership view has reached
// the broker and hub, and the broker answers. The error says what is
// missing; it wraps ErrNotReady or ErrStopping.
func (n *Node) Ready(ctx context.Context) error {
	if n.stopping.Load() {
		return ErrStopping
	}
	if !n.running.Load() {
		return fmt.Errorf("%w: not started", ErrNotReady)
	}
	if n.rdb != nil {
		// Sessions live there (and with --broker redis everything else):
		// a node that booted while Redis was down says so, and becomes
		// ready when it comes back.
		pctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
		err := n.rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("%w: redis: %w", ErrNotReady, err)
		}
	}
	if !n.cluster.Joined() {
		return fmt.Errorf("%w: cluster not joined", ErrNotReady)
	}
	if n.mesh != nil {
		if q := n.mesh.Quorum(); !q.Has {
			return fmt.Errorf("%w: %s", ErrNotReady, q)
		}
	}
	if alive, want := len(n.cluster.Alive()), n.expected(); alive < want {
		return fmt.Errorf("%w: %d of %d expected nodes alive", ErrNotReady, alive, want)
	}
	if !n.revoked.Loaded() {
		return fmt.Errorf("%w: logouts not yet loaded", ErrNotReady)
	}
	if !n.accounts.Loaded() || !n.rooms.Loaded() {
		return fmt.Errorf("%w: accounts or private rooms not yet loaded", ErrNotReady)
	}
	// Only a starting node waits for its first view to be applied: later
	// membership changes leave every node briefly behind gossip, and
	// failing readiness then would let a load balancer drop the whole
	// cluster at once.
	if !n.synced.Load() {
		if !n.membershipSynced() {
			return fmt.Errorf("%w: membership not yet applied", ErrNotReady)
		}
		n.synced.Store(true)
	}
	if p, ok := n.broker.(transport.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return fmt.Errorf("%w: broker: %w", ErrNotReady, err)
		}
	}
	return nil
}

// redisPingTimeout bounds Ready's check of Redis.
const redisPingTimeout = time.Second

// expected is how many alive nodes readiness needs (Config.Expect).
func (n *Node) expected() int {
	switch {
	case n.cfg.Expect > 0:
		return n.cfg.Expect
	case n.cluster.ExpectsPeers():
		return 2
	}
	return 1
}

// membershipSynced reports whether the broker and hub have been told the
// membership that gossip shows: every alive node announced, every dead or
// departed one withdrawn. The cluster coalesces events for up to a quarter
// second; until they arrive, the broker routes with an older view than
// /api/cluster shows, so a node that just joined could take traffic for
// channels it does not own, or count users of a dead node as present.
func (n *Node) membershipSynced() bool {
	members := n.cluster.Members()
	n.seenMu.Lock()
	defer n.seenMu.Unlock()
	for _, m := range members {
		if alive := m.State == cluster.StateAlive; n.seen[m.Name] != alive {
			return false
		}
	}
	return true
}

// alivePeers is the alive membership as the mesh broker sees it.
func (n *Node) alivePeers() []transport.Peer {
	nodes := n.cluster.Alive()
	out := make([]transport.Peer, len(nodes))
	for i, m := range nodes {
		out[i] = transport.Peer{Name: m.Name, Addr: m.HTTP}
	}
	return out
}

// departedNames are the nodes that left the cluster gracefully: the mesh
// broker's quorum no longer counts them.
func (n *Node) departedNames() []string {
	var out []string
	for _, m := range n.cluster.Members() {
		if m.State == cluster.StateLeft {
			out = append(out, m.Name)
		}
	}
	return out
}

// minVoters is how many voting nodes the mesh broker counts until it has
// seen them: this node and its seeds (a node given the cluster's seed
// list counts the whole cluster), or Config.Expect when that is more.
func (n *Node) minVoters() int {
	return max(n.cfg.Expect, 1+len(n.cluster.Seeds()))
}

// members is the membership as package web shows it (/api/cluster).
func (n *Node) members() []web.Member {
	nodes := n.cluster.Members()
	out := make([]web.Member, len(nodes))
	for i, m := range nodes {
		out[i] = web.Member{Name: m.Name, HTTP: m.HTTP, State: string(m.State)}
	}
	return out
}

func (n *Node) aliveNames() []string {
	peers := n.cluster.Alive()
	out := make([]string, len(peers))
	for i, p := range peers {
		out[i] = p.Name
	}
	return out
}

func (n *Node) aliveURLs() []string {
	peers := n.cluster.Alive()
	out := make([]string, 0, len(peers))
	for _, p := range peers {
		if p.HTTP != "" {
			out = append(out, p.HTTP)
		}
	}
	return out
}
