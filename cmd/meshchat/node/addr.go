package node

import (
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"strconv"
	"strings"
)

// defaultName derives a node name from the hostname and both ports, so
// several nodes on one host get distinct names without configuration.
func defaultName(hostname string, httpPort, gossipPort int) string {
	var b strings.Builder
	for _, r := range hostname {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.':
			// The first label is enough to tell hosts apart in practice
			// and keeps names short.
			goto done
		default:
			b.WriteByte('-')
		}
	}
done:
	host := b.String()
	if host == "" {
		host = "node"
	}
	suffix := fmt.Sprintf("-%d-%d", httpPort, gossipPort)
	if max := 64 - len(suffix); len(host) > max {
		host = host[:max]
	}
	return host + suffix
}

// advertiseURL derives the HTTP base URL others use to reach a listener
// bound at addr (the real, bound address). A wildcard host (empty, 0.0.0.0,
// ::) is replaced by the first non-loopback address the machine's hostname
// resolves to, else 127.0.0.1: good enough on one host or a flat network;
// across NAT or behind a proxy, set --advertise-http.
func advertiseURL(addr string, hostname func() (string, error), lookup func(string) ([]string, error)) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if h, err := hostname(); err == nil && h != "" {
			if addrs, err := lookup(h); err == nil {
				for _, a := range addrs {
					if ip := net.ParseIP(a); ip != nil && !ip.IsLoopback() && ip.To4() != nil {
						host = a
						break
					}
				}
			}
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// loopbackOnlyToOthers reports whether a node listening on httpAddr would
// advertise url, a loopback address, although it listens on every
// interface: fine on one host, silently broken across several.
func loopbackOnlyToOthers(httpAddr, url string) bool {
	host, _, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return false
	}
	u, err := neturl.Parse(url)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback())
}

// pinGossipPort turns port 0 into a concrete free port (TCP and UDP) so it
// can appear in the derived node name before memberlist binds it. There is
// a small window in which another process could take the port; Start then
// fails with a clear bind error.
func pinGossipPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr, err
	}
	for range 20 {
		tl, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		p := tl.Addr().(*net.TCPAddr).Port
		ul, uerr := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		tl.Close()
		if uerr == nil {
			ul.Close()
			return net.JoinHostPort(host, strconv.Itoa(p)), nil
		}
	}
	return "", errors.New("no free port for both TCP and UDP")
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
