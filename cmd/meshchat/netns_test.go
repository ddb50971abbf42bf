package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// netLab is a network namespace holding one node, linked to the test's
// own (root) namespace by two veth pairs: the cluster link, which the
// node gossips and advertises on and which the test cuts to partition it
// from the nodes in the root namespace, and the test link, over which the
// test keeps reaching the node's HTTP listener whatever the cluster link
// does.
type netLab struct {
	t  *testing.T
	ip string // path of iproute2's ip
	ns string
	// ClusterHost is the root end's address on the cluster link, where the
	// root namespace's nodes listen; NodeHost the namespace end's.
	ClusterHost, NodeHost string
	// TestHost is the namespace end's address on the test link.
	TestHost string
	nodeLink string // the namespace end of the cluster link
}

const netLabPrefix = "mcpart"

// newNetLab builds the namespace and its links, named after this process
// so that runs in parallel never collide, and removes them when the test
// ends (and what a killed earlier run left behind, first). Without root,
// CAP_NET_ADMIN or iproute2 the test is skipped, or fails under CI=true.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	ip := clustertest.RequireBinary(t, "ip", "iproute2", "/usr/sbin/ip", "/sbin/ip")
	removeStaleNetLabs(ip)
	pid := os.Getpid()
	sub := pid % 250
	l := &netLab{
		t:           t,
		ip:          ip,
		ns:          fmt.Sprintf("%s%d", netLabPrefix, pid),
		ClusterHost: fmt.Sprintf("10.213.%d.1", sub),
		NodeHost:    fmt.Sprintf("10.213.%d.2", sub),
		TestHost:    fmt.Sprintf("10.213.%d.6", sub),
		nodeLink:    fmt.Sprintf("mcc%dn", pid),
	}
	if out, err := exec.Command(ip, "netns", "add", l.ns).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("cannot create a network namespace (needs root or CAP_NET_ADMIN, and iproute2: apt-get install iproute2): ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", l.ns).Run() })
	for _, link := range []struct{ root, node, rootAddr, nodeAddr string }{
		{fmt.Sprintf("mcc%dr", pid), l.nodeLink, l.ClusterHost + "/30", l.NodeHost + "/30"},
		{fmt.Sprintf("mct%dr", pid), fmt.Sprintf("mct%dn", pid), fmt.Sprintf("10.213.%d.5/30", sub), l.TestHost + "/30"},
	} {
		l.run("link", "add", link.root, "type", "veth", "peer", "name", link.node, "netns", l.ns)
		l.run("addr", "add", link.rootAddr, "dev", link.root)
		l.run("link", "set", link.root, "up")
		l.run("-n", l.ns, "addr", "add", link.nodeAddr, "dev", link.node)
		l.run("-n", l.ns, "link", "set", link.node, "up")
	}
	l.run("-n", l.ns, "link", "set", "lo", "up")
	return l
}

func (l *netLab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(l.ip, args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Wrap is the command prefix that runs a program inside the namespace.
func (l *netLab) Wrap() []string { return []string{l.ip, "netns", "exec", l.ns} }

// Cut takes the cluster link down: no packet passes between the node in
// the namespace and the root namespace's nodes any more.
func (l *netLab) Cut() { l.run("-n", l.ns, "link", "set", l.nodeLink, "down") }

// Heal brings the cluster link back up.
func (l *netLab) Heal() { l.run("-n", l.ns, "link", "set", l.nodeLink, "up") }

// FreePort is a port free on the root end of the cluster link.
func (l *netLab) FreePort() string {
	l.t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(l.ClusterHost, "0"))
	if err != nil {
		l.t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// removeStaleNetLabs deletes the namespaces of earlier runs whose process
// is gone (a killed test leaves them behind; their veth pairs go with
// them).
func removeStaleNetLabs(ip string) {
	out, err := exec.Command(ip, "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, netLabPrefix))
		if !strings.HasPrefix(name, netLabPrefix) || err != nil || processAlive(pid) {
			continue
		}
		_ = exec.Command(ip, "netns", "del", name).Run()
	}
}

func processAlive(pid int) bool {
	return pid == os.Getpid() || syscall.Kill(pid, 0) == nil
}
