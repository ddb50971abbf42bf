package web

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// limitedServer serves 200 on a ConnLimiter with the given cap.
func limitedServer(t *testing.T, perIP int, exempt func(netip.Addr) bool) (*ConnLimiter, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitListener(ln, perIP, exempt)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l, ln.Addr().String()
}

// dialFrom opens a TCP connection to addr from the local address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// Without a cap a refused connection would wait for its request.
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	return c
}

// get sends one request on c and returns the answer.
func get(t *testing.T, c net.Conn) (*http.Response, apiError) {
	t.Helper()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ae apiError
	_ = json.NewDecoder(resp.Body).Decode(&ae)
	return resp, ae
}

// One address that opens more connections than the cap gets the extras
// refused at once, with a JSON 429, and counted; another address still
// connects, and a closed connection frees its place.
func TestConnLimitPerIP(t *testing.T) {
	const limit, extra = 3, 2
	l, addr := limitedServer(t, limit, nil)
	var held []net.Conn
	for range limit {
		held = append(held, dialFrom(t, "127.0.0.1", addr))
	}
	clustertest.WaitFor(t, waitFor, "the cap's connections accepted", func() bool { return l.Stats().Open == limit })
	for range extra {
		c := dialFrom(t, "127.0.0.1", addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("a connection over the cap read %v, want a 429", err)
		}
		var ae apiError
		_ = json.NewDecoder(resp.Body).Decode(&ae)
		if resp.StatusCode != http.StatusTooManyRequests || ae.Error.Code != CodeTooManyConnections {
			t.Fatalf("over the cap: %d %+v", resp.StatusCode, ae)
		}
	}
	if st := l.Stats(); st.RefusedPerIP != extra || st.Open != limit {
		t.Fatalf("stats %+v, want %d refused and %d open", st, extra, limit)
	}
	// The held connections are served, and so is another address.
	if resp, _ := get(t, held[0]); resp.StatusCode != 200 {
		t.Fatalf("a connection within the cap: %d", resp.StatusCode)
	}
	if resp, _ := get(t, dialFrom(t, "127.0.0.2", addr)); resp.StatusCode != 200 {
		t.Fatalf("another address: %d", resp.StatusCode)
	}
	// Closing one frees a place for the first address.
	_ = held[1].Close()
	clustertest.WaitFor(t, waitFor, "a closed connection released", func() bool { return l.Stats().Open == limit })
	if resp, _ := get(t, dialFrom(t, "127.0.0.1", addr)); resp.StatusCode != 200 {
		t.Fatalf("after a close: %d", resp.StatusCode)
	}
}

// The cluster's own nodes are never refused: their mesh links arrive on
// the same listener.
func TestConnLimitExempt(t *testing.T) {
	peer := netip.MustParseAddr("127.0.0.1")
	l, addr := limitedServer(t, 1, func(a netip.Addr) bool { return a == peer })
	for range 3 {
		if resp, _ := get(t, dialFrom(t, "127.0.0.1", addr)); resp.StatusCode != 200 {
			t.Fatalf("a peer refused: %d", resp.StatusCode)
		}
	}
	get(t, dialFrom(t, "127.0.0.2", addr))
	c := dialFrom(t, "127.0.0.2", addr)
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a client over the cap: %v %v", resp, err)
	}
	if st := l.Stats(); st.RefusedPerIP != 1 {
		t.Fatalf("stats %+v", st)
	}
}
