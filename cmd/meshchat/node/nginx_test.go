package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

func TestNginxRoundRobin(t *testing.T) {
	clustertest.RequireBinary(t, "nginx", "nginx", "/usr/sbin/nginx") // before starting nodes
	nodes := nodetest.StartCluster(t, 3, nodetest.Options{Broker: "mesh", RedisURL: ""})
	var upstreams []string
	for _, n := range nodes {
		upstreams = append(upstreams, n.HTTPAddr())
	}

	lb := nodetest.StartNginx(t, upstreams, nil)

	// The proxy is plain round-robin: logins land on every node.
	seen := map[string]bool{}
	for i := 0; i < 12 && len(seen) < 3; i++ {
		seen[webtest.Login(t, lb, fmt.Sprintf("probe%d", i)).Node] = true
	}
	if len(seen) < 2 {
		t.Fatalf("logins through nginx all landed on %v: not balanced", seen)
	}
	if v, ok := webtest.GetCluster(t, lb); !ok || len(v.Nodes) != 3 {
		t.Fatalf("/api/cluster through nginx: %+v", v)
	}
	if st, _ := webtest.Get(t, lb+"/readyz", nil); st != http.StatusOK {
		t.Fatalf("/readyz through nginx: %d", st)
	}
	if st, _ := webtest.Get(t, lb+"/_mesh/", nil); st != http.StatusNotFound {
		t.Errorf("/_mesh/ through nginx: %d, want 404 (node traffic stays internal)", st)
	}

	// Two users whose WebSockets land on different nodes chat through the
	// proxy. The browser-like Origin is the proxy's own URL.
	alice, bob := webtest.Login(t, lb, "alice"), webtest.Login(t, lb, "bob")
	a := webtest.Dial(t, lb, alice, webtest.DialOptions{Origin: lb})
	var b *webtest.Conn
	for range 6 {
		c := webtest.Dial(t, lb, bob, webtest.DialOptions{Origin: lb})
		if c.Welcome.Str("node") != a.Welcome.Str("node") {
			b = c
			break
		}
		c.Close()
	}
	if b == nil {
		t.Fatalf("every WebSocket of bob landed on alice's node %s", a.Welcome.Str("node"))
	}
	t.Logf("alice on %s, bob on %s (logins on %s, %s)", a.Welcome.Str("node"), b.Welcome.Str("node"), alice.Node, bob.Node)
	a.Join("proxied")
	b.Join("proxied")
	a.Expect("presence", 10*time.Second, func(f webtest.Frame) bool { return f.Str("user") == "bob" && f["online"] == true })
	a.Send(map[string]string{"type": "send", "room": "proxied", "text": "through nginx"})
	b.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("from") == "alice" && f.Str("text") == "through nginx" })
	b.Send(map[string]string{"type": "dm", "to": "alice", "text": "dm through nginx"})
	a.Expect("dm", 10*time.Second, func(f webtest.Frame) bool { return f.Str("from") == "bob" && f.Str("text") == "dm through nginx" })

	// A foreign Origin is refused, through the proxy too.
	if _, resp, err := webtest.TryDial(lb, alice, webtest.DialOptions{Origin: "http://evil.example"}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		st := 0
		if resp != nil {
			st = resp.StatusCode
		}
		t.Errorf("foreign origin: err %v status %d, want 403", err, st)
	}
}
