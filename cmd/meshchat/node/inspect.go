package node

import (
	"context"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/mesh"
	"github.com/meshchat/meshchat/web"
)

// inspector tells the admin view (web.Inspector) about the node's
// broker: the mesh's links and channel owners, or whether Redis answers.
type inspector struct{ n *Node }

var _ web.Inspector = inspector{}

func (i inspector) BrokerHealth(ctx context.Context) web.BrokerHealth {
	h := web.BrokerHealth{OK: true}
	if i.n.mesh != nil {
		for _, l := range i.n.mesh.Links() {
			h.Links = append(h.Links, web.LinkHealth{Node: l.Peer, State: l.State, Error: l.Err})
			if l.State == mesh.LinkDown {
				h.OK, h.Error = false, "no link to "+l.Peer
			}
		}
		if q := i.n.mesh.Quorum(); !q.Has {
			h.OK, h.Error = false, q.String()
		}
		return h
	}
	if p, ok := i.n.broker.(transport.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			h.OK, h.Error = false, err.Error()
		}
	}
	return h
}

func (i inspector) RoomOwner(room string) string {
	if i.n.mesh == nil {
		return ""
	}
	return i.n.mesh.OwnerOf(chat.RoomChannel(room))
}
