package node

import (
	"net"
	"net/netip"
	"net/url"
)

// peerIPs is the set of the other alive nodes' addresses (gossip and
// advertised HTTP hosts that are IP addresses), which the HTTP
// listener's per-address cap exempts: mesh links between nodes arrive
// there. It is replaced whole on every membership event.
type peerIPs map[netip.Addr]struct{}

// updatePeerIPs recomputes the set from the alive members. It runs on the
// cluster's event goroutine.
func (n *Node) updatePeerIPs() {
	set := peerIPs{}
	for _, m := range n.cluster.Alive() {
		if m.Name == n.name {
			continue
		}
		if host, _, err := net.SplitHostPort(m.Addr); err == nil {
			set.add(host)
		}
		if u, err := url.Parse(m.HTTP); err == nil {
			set.add(u.Hostname())
		}
	}
	n.peers.Store(&set)
}

func (s peerIPs) add(host string) {
	if a, err := netip.ParseAddr(host); err == nil {
		s[a.Unmap()] = struct{}{}
	}
}

// isPeer reports whether addr is one of the other alive nodes'.
func (n *Node) isPeer(addr netip.Addr) bool {
	p := n.peers.Load()
	if p == nil {
		return false
	}
	_, ok := (*p)[addr]
	return ok
}
