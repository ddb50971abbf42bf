package cluster

import (
	"context"
	"net"
	"slices"
	"time"
)

// seedLookupTimeout bounds resolving one seed's host name at start.
const seedLookupTimeout = 2 * time.Second

// otherSeeds returns the seeds that are not this node, which listens on
// port at bindHost (empty or a wildcard for every interface). Every node
// of a cluster can then be given the same seed list. A seed whose name
// does not resolve is kept: it may come up later, and it is not this
// node, whose own addresses resolve.
func otherSeeds(ctx context.Context, seeds []string, bindHost string, port int) []string {
	var out []string
	for _, s := range seeds {
		if !isSelf(ctx, s, bindHost, port) {
			out = append(out, s)
		}
	}
	return out
}

func isSelf(ctx context.Context, seed, bindHost string, port int) bool {
	host, p, err := splitHostPort(seed)
	if err != nil || p != port {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, seedLookupTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, cmpHost(host))
	if err != nil {
		return false
	}
	own := ownAddrs(bindHost)
	bind := net.ParseIP(bindHost)
	// Bound to every interface or to loopback, any loopback address
	// (127.0.1.1, say, where the hostname resolves to it) reaches us.
	loopbackIsUs := bind == nil || bind.IsUnspecified() || bind.IsLoopback()
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			continue
		}
		if ip.IsUnspecified() || (loopbackIsUs && ip.IsLoopback()) || slices.ContainsFunc(own, ip.Equal) {
			return true
		}
	}
	return false
}

// cmpHost is host as a name to look up: empty means this machine.
func cmpHost(host string) string {
	if host == "" {
		return "localhost"
	}
	return host
}

// ownAddrs are the addresses a listener bound to bindHost answers on.
func ownAddrs(bindHost string) []net.IP {
	if ip := net.ParseIP(bindHost); ip != nil && !ip.IsUnspecified() {
		return []net.IP{ip}
	}
	var out []net.IP
	if ifAddrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifAddrs {
			if n, ok := a.(*net.IPNet); ok {
				out = append(out, n.IP)
			}
		}
	}
	// Loopback answers even where interfaces cannot be listed.
	return append(out, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
}
