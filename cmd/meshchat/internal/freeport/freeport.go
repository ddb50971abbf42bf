// Package freeport finds ports for the listeners the command starts on
// one host: the demo's nodes and the processes the bench spawns. Tests use
// cluster/clustertest instead, which needs a testing.TB.
package freeport

import (
	"errors"
	"net"
	"strconv"
	"sync"
)

// scan is how many ports Next tries before it gives up.
const scan = 200

// ErrNone is returned when no port in the scanned range is free.
var ErrNone = errors.New("no free port")

// Set hands out ports that were free a moment ago, never the same one
// twice. The zero value is ready to use; it is safe for concurrent use.
type Set struct {
	mu    sync.Mutex
	taken map[int]bool
}

// Next returns the first port >= from that host can bind for TCP and, when
// udp is set, for UDP too (memberlist binds both on the gossip port).
//
// Scanning from a chosen base, rather than binding port 0, keeps the ports
// predictable for the demo and, with a base below the kernel's ephemeral
// range (32768 and up by default), keeps a spawned process from losing its
// port to an outgoing connection between the check and its bind.
func (s *Set) Next(host string, from int, udp bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := from; p <= 65535 && p < from+scan; p++ {
		if s.taken[p] || !free(host, p, udp) {
			continue
		}
		if s.taken == nil {
			s.taken = map[int]bool{}
		}
		s.taken[p] = true
		return p, nil
	}
	return 0, ErrNone
}

func free(host string, port int, udp bool) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}
