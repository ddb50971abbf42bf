package web

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConnsPerIP is how many TCP connections one client address may
// hold open on the HTTP listener at once. A browser opens a handful; one
// client with more is using up the node's file descriptors.
const DefaultMaxConnsPerIP = 256

// refusedAnswer is what a connection over the cap reads before it is
// closed: written straight to the fresh socket, whose send buffer is
// empty, so it never blocks the accept loop.
var refusedAnswer = func() []byte {
	body := `{"error":{"code":"` + CodeTooManyConnections + `","message":"too many connections from your address"}}`
	return []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// refusedWriteTimeout bounds writing refusedAnswer.
const refusedWriteTimeout = 100 * time.Millisecond

// ConnLimitStats are a LimitListener's counters.
type ConnLimitStats struct {
	Open         int64  // connections accepted and not yet closed
	RefusedPerIP uint64 // connections closed at accept: their address was at the cap
}

// ConnLimiter is a net.Listener that caps the connections open at once
// from one remote IP address. Over the cap, a connection is answered 429
// (code too_many_connections) and closed at once, before any request is
// read (over TLS, whose handshake comes after accept, the answer is
// not readable: the client sees the connection close). Create it with
// LimitListener.
type ConnLimiter struct {
	net.Listener
	perIP  int
	exempt func(netip.Addr) bool

	open    atomic.Int64
	refused atomic.Uint64

	mu     sync.Mutex
	byAddr map[netip.Addr]int
}

// LimitListener wraps ln so that one remote IP holds at most perIP
// connections (0 or less: no cap, connections are only counted). exempt,
// when not nil, is asked about an address at the cap: the cluster's own
// nodes (their mesh links arrive on this listener) are never refused.
// Loopback is not special.
func LimitListener(ln net.Listener, perIP int, exempt func(netip.Addr) bool) *ConnLimiter {
	return &ConnLimiter{Listener: ln, perIP: perIP, exempt: exempt, byAddr: make(map[netip.Addr]int)}
}

// Accept returns the next connection within the cap; those over it are
// refused here and never returned.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteIP(c)
		if l.admit(addr) {
			l.open.Add(1)
			return &limitedConn{Conn: c, l: l, addr: addr}, nil
		}
		l.refused.Add(1)
		_ = c.SetWriteDeadline(time.Now().Add(refusedWriteTimeout))
		_, _ = c.Write(refusedAnswer)
		_ = c.Close()
	}
}

func (l *ConnLimiter) admit(addr netip.Addr) bool {
	l.mu.Lock()
	n := l.byAddr[addr]
	if l.perIP > 0 && n >= l.perIP && (l.exempt == nil || !l.exempt(addr)) {
		l.mu.Unlock()
		return false
	}
	l.byAddr[addr] = n + 1
	l.mu.Unlock()
	return true
}

func (l *ConnLimiter) release(addr netip.Addr) {
	l.open.Add(-1)
	l.mu.Lock()
	if n := l.byAddr[addr]; n > 1 {
		l.byAddr[addr] = n - 1
	} else {
		delete(l.byAddr, addr)
	}
	l.mu.Unlock()
}

// Stats returns the listener's counters.
func (l *ConnLimiter) Stats() ConnLimitStats {
	return ConnLimitStats{Open: l.open.Load(), RefusedPerIP: l.refused.Load()}
}

// remoteIP is c's remote address without its port, IPv4 in IPv6 unmapped
// so that one client is one key; the zero Addr when it has none (a unix
// socket: all such clients share it).
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// limitedConn gives its place back when closed, once (the HTTP server
// and a hijacked WebSocket may both close it).
type limitedConn struct {
	net.Conn
	l      *ConnLimiter
	addr   netip.Addr
	closed atomic.Bool
}

// NetConn returns the accepted connection (see abortConn).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.addr)
	}
	return err
}
