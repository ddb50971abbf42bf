package mesh

import (
	"errors"

	"github.com/meshchat/meshchat/transport"
)

// What the broker reports of its health, for the admin view: the state
// of its links to the other nodes, and which node orders a channel.

// The states of a link (LinkState.State).
const (
	// LinkUp: connected to the peer.
	LinkUp = "up"
	// LinkDown: the last connection or dial failed; the link redials
	// when it has something to send.
	LinkDown = "down"
	// LinkIdle: never dialled, because this node had nothing to send the
	// peer yet.
	LinkIdle = "idle"
)

// LinkState is this node's link to one peer in its view.
type LinkState struct {
	Peer  string
	State string // LinkUp, LinkDown or LinkIdle
	// Err is why the link is down, else "".
	Err string
}

// Links reports the link to each peer in the broker's view of the
// cluster (itself excluded), sorted by name.
func (b *Broker) Links() []LinkState {
	var out []LinkState
	for _, p := range b.peerList() {
		if p.Name == b.cfg.Self.Name {
			continue
		}
		st := LinkState{Peer: p.Name, State: LinkIdle}
		b.linkMu.Lock()
		l := b.links[p.Name]
		b.linkMu.Unlock()
		if l != nil {
			l.mu.Lock()
			switch {
			case l.ws != nil:
				st.State = LinkUp
			case l.lastErr != nil && !errors.Is(l.lastErr, transport.ErrClosed):
				st.State, st.Err = LinkDown, l.lastErr.Error()
			}
			l.mu.Unlock()
		}
		out = append(out, st)
	}
	return out
}

// OwnerOf names the node that orders channel's publications in this
// node's view of the cluster.
func (b *Broker) OwnerOf(channel string) string { return b.ownerOf(channel).Name }
