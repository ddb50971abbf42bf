package node_test

import (
	"bufio"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// dialFrom opens a TCP connection from the local IP from to base's host.
func dialFrom(t *testing.T, from, base string) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

// healthz asks /healthz on c.
func healthz(t *testing.T, c net.Conn) int {
	t.Helper()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// One address that opens more connections than --max-conns-per-ip has
// the extras refused and counted; another address still gets in.
func TestConnectionsPerAddressCapped(t *testing.T) {
	const limit, extra = 4, 3
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.MaxConnsPerIP = limit
	cfg.MetricsAddr = "127.0.0.1:0" // scraped from an address of its own
	n := nodetest.Start(t, cfg)
	metrics := "http://" + n.MetricsAddr() + node.MetricsPath
	for range limit {
		dialFrom(t, "127.0.0.1", n.URL())
	}
	clustertest.WaitFor(t, 10*time.Second, "the cap's connections open", func() bool {
		return scrape(t, metrics)["meshchat_http_connections"] == limit
	})
	for range extra {
		c := dialFrom(t, "127.0.0.1", n.URL())
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a connection over the cap: %v %v", resp, err)
		}
	}
	m := scrape(t, metrics)
	if got := m[`meshchat_http_connections_refused_total{reason="per_ip"}`]; got != extra {
		t.Errorf("refused counter %v, want %d", got, extra)
	}
	if got := m["meshchat_http_connections"]; got != limit {
		t.Errorf("open connections %v, want %d", got, limit)
	}
	if code := healthz(t, dialFrom(t, "127.0.0.2", n.URL())); code != 200 {
		t.Fatalf("another address: %d", code)
	}
}

// The cap never refuses the cluster's own nodes: with a cap of one
// connection per address, three nodes on one address still carry a
// message between them.
func TestConnectionCapExemptsPeers(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.Options{Adjust: func(_ int, c *node.Config) { c.MaxConnsPerIP = 1 }})
	alice, bob := webtest.Login(t, nodes[0].URL(), "alice"), webtest.Login(t, nodes[2].URL(), "bob")
	a, b := webtest.Dial(t, nodes[0].URL(), alice, webtest.DialOptions{}), webtest.Dial(t, nodes[2].URL(), bob, webtest.DialOptions{})
	a.Join("lobby")
	b.Join("lobby")
	a.Send(map[string]string{"type": "send", "room": "lobby", "text": "across"})
	if got := b.Expect("message", 10*time.Second, nil); got.Str("text") != "across" {
		t.Fatalf("bob got %v", got)
	}
}
