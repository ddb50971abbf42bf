package node_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// nginxConfig wraps docs/nginx.conf (an http-context snippet) into a
// complete nginx.conf whose every path lies under dir. Only the upstream
// servers and the listen port of the shipped file are replaced, so the test
// runs the configuration users copy.
func nginxConfig(t *testing.T, dir string, listen string, upstreams []string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(doc)

	serverRE := regexp.MustCompile(`(?m)^(\s*)server\s+127\.0\.0\.1:\d+(.*);\s*$`)
	matches := serverRE.FindAllStringSubmatchIndex(conf, -1)
	if len(matches) == 0 {
		t.Fatal("docs/nginx.conf: no upstream server lines found")
	}
	indent := conf[matches[0][2]:matches[0][3]]
	params := conf[matches[0][4]:matches[0][5]]
	var servers strings.Builder
	for i, u := range upstreams {
		if i > 0 {
			servers.WriteString("\n")
		}
		fmt.Fprintf(&servers, "%sserver %s%s;", indent, u, params)
	}
	conf = conf[:matches[0][0]] + servers.String() + conf[matches[len(matches)-1][1]:]

	listenRE := regexp.MustCompile(`(?m)^(\s*)listen\s+\d+;`)
	if !listenRE.MatchString(conf) {
		t.Fatal("docs/nginx.conf: no listen line found")
	}
	conf = listenRE.ReplaceAllString(conf, "${1}listen "+listen+";")
	if regexp.MustCompile(`\bip_hash\b|\bsticky\b`).MatchString(stripComments(conf)) {
		t.Fatal("docs/nginx.conf must balance in plain round-robin (no ip_hash/sticky)")
	}

	return fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

%[2]s
}
`, dir, conf)
}

func stripComments(s string) string {
	return regexp.MustCompile(`(?m)#.*$`).ReplaceAllString(s, "")
}

func TestNginxRoundRobin(t *testing.T) {
	nginx := clustertest.RequireBinary(t, "nginx", "nginx", "/usr/sbin/nginx")
	nodes := nodetest.StartCluster(t, 3, nodetest.Options{Broker: "mesh", RedisURL: ""})
	var upstreams []string
	for _, n := range nodes {
		upstreams = append(upstreams, n.HTTPAddr())
	}

	dir := t.TempDir()
	listen := clustertest.FreeAddr(t, false)
	conf := nginxConfig(t, dir, listen, upstreams)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	proc, err := clustertest.StartProcess(exec.Command(nginx, "-p", dir+"/", "-c", confPath, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(syscall.SIGQUIT, 10*time.Second) // nginx's graceful stop
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s\nconfig:\n%s", proc.Out.String(), errLog, conf)
		}
	})
	clustertest.WaitFor(t, 10*time.Second, "nginx to listen", func() bool {
		if !proc.Running() {
			t.Fatalf("nginx exited: %s", proc.Out.String())
		}
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	lb := "http://" + listen

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
