package nodetest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// StartNginx runs a real nginx on a free port in front of upstreams
// (host:port of nodes) with the configuration users copy, docs/nginx.conf:
// only its upstream servers and listen port are replaced, and then edit,
// when set, may change it further (a test that blocks WebSockets, say).
// It returns the proxy's base URL; nginx stops when the test ends, and
// its logs and configuration are shown when the test failed.
func StartNginx(t *testing.T, upstreams []string, edit func(conf string) string) string {
	t.Helper()
	nginx := clustertest.RequireBinary(t, "nginx", "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	listen := clustertest.FreeAddr(t, false)
	conf := nginxConfig(t, dir, listen, upstreams, edit)
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
	return "http://" + listen
}

// docsDir is the repository's docs directory, found from this file.
func docsDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("nodetest: cannot locate the source tree")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "docs")
}

// nginxConfig wraps docs/nginx.conf (an http-context snippet) into a
// complete nginx.conf whose every path lies under dir. Only the upstream
// servers and the listen port of the shipped file are replaced, so the test
// runs the configuration users copy.
func nginxConfig(t *testing.T, dir string, listen string, upstreams []string, edit func(string) string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(docsDir(t), "nginx.conf"))
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
	if edit != nil {
		conf = edit(conf)
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
