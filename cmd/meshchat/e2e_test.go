package main

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/web/webtest"
)

func TestEndToEndKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	p1 := startProc(t, "e1", "")
	waitProcsReady(t, p1)
	p2 := startProc(t, "e2", p1.gossip)
	p3 := startProc(t, "e3", p1.gossip)
	procs := []*proc{p1, p2, p3}
	waitProcsReady(t, procs...)

	// Users on e1 and e3 chat; a third user sits on e2.
	alice, bob, carl := webtest.Login(t, p1.url, "alice"), webtest.Login(t, p3.url, "bob"), webtest.Login(t, p2.url, "carl")
	a, b, c := webtest.Dial(t, p1.url, alice, webtest.DialOptions{}), webtest.Dial(t, p3.url, bob, webtest.DialOptions{}), webtest.Dial(t, p2.url, carl, webtest.DialOptions{})
	a.Join("e2e")
	b.Join("e2e")
	c.Join("e2e")
	a.Send(map[string]string{"type": "send", "room": "e2e", "text": "before"})
	b.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == "before" })
	a.Expect("presence", 10*time.Second, func(f webtest.Frame) bool { return f.Str("user") == "carl" && f["online"] == true })

	start := time.Now()
	if err := p2.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p2.Done()
	took := clustertest.WaitFor(t, 30*time.Second, "e1 and e3 to list e2 as dead", func() bool {
		return webtest.StateOf(t, p1.url, "e2") == "dead" && webtest.StateOf(t, p3.url, "e2") == "dead"
	})
	t.Logf("kill -9 detection: e2 listed dead by both survivors after %.2fs", took.Seconds())
	a.Expect("presence", 15*time.Second, func(f webtest.Frame) bool { return f.Str("user") == "carl" && f["online"] == false })
	t.Logf("carl offline for alice after %.2fs", time.Since(start).Seconds())

	// The survivors keep serving: the existing connections and new logins.
	t.Logf("room usable after the crash after %v", a.SendRetry("e2e", "after", 20*time.Second).Round(time.Millisecond))
	b.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == "after" })
	dave := webtest.Login(t, p3.url, "dave")
	d := webtest.Dial(t, p1.url, dave, webtest.DialOptions{})
	webtest.WaitReady(t, 10*time.Second, p1.url, p3.url)
	d.JoinUntil("e2e", 10*time.Second, func(m []string) bool {
		return slices.Contains(m, "alice") && slices.Contains(m, "bob") && !slices.Contains(m, "carl")
	})
	if nodes, _ := d.Welcome["nodes"].([]any); len(nodes) != 2 {
		t.Errorf("welcome after the crash lists %v, want the two alive nodes", d.Welcome["nodes"])
	}

	// SIGTERM is a graceful stop: clients are told to go elsewhere with
	// 1012, the process exits 0 and the other node stops listing it alive.
	if err := p3.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := b.Closed(20 * time.Second); code != 1012 {
		t.Errorf("bob's connection closed with %d, want 1012 (service restart)", code)
	}
	select {
	case <-p3.Done():
		if p3.Err() != nil {
			t.Errorf("e3 exit after SIGTERM: %v", p3.Err())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("e3 did not exit within 30s of SIGTERM")
	}
	clustertest.WaitFor(t, 10*time.Second, "e1 to stop listing e3 as alive", func() bool {
		s := webtest.StateOf(t, p1.url, "e3")
		return s != "alive" && s != "suspect"
	})
	t.Logf("room usable on e1 alone after %v", a.SendRetry("e2e", "alone", 20*time.Second).Round(time.Millisecond))
}

// TestEndToEndSeedRestart is the README's first recipe, restarted: e1
// runs without --join, e2 and e3 join it; e1 is stopped with SIGTERM and
// started again with the same command. The survivors must find it again
// (it left gracefully and has no seeds of its own), and users routed to it
// must see the room's history, not a cluster of one with an empty room.
func TestEndToEndSeedRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	httpAddr, gossipAddr := clustertest.FreeAddr(t, false), clustertest.FreeAddr(t, true)
	p1 := startProcOn(t, "e1", httpAddr, gossipAddr, "")
	p2 := startProc(t, "e2", p1.gossip)
	p3 := startProc(t, "e3", p1.gossip)
	converged := func(procs ...*proc) func() bool {
		return func() bool {
			for _, p := range procs {
				v, ok := webtest.GetCluster(t, p.url)
				alive := 0
				for _, n := range v.Nodes {
					if n.State == "alive" {
						alive++
					}
				}
				if !ok || alive != 3 {
					return false
				}
			}
			return true
		}
	}
	clustertest.WaitFor(t, 30*time.Second, "three nodes alive in every view", converged(p1, p2, p3))
	webtest.WaitReady(t, 30*time.Second, p1.url, p2.url, p3.url)

	bob := webtest.Login(t, p2.url, "bob")
	b := webtest.Dial(t, p2.url, bob, webtest.DialOptions{})
	b.Join("lobby")
	b.SendRetry("lobby", "before the restart", 20*time.Second)

	p1.Stop(syscall.SIGTERM, 20*time.Second)
	if err := p1.Err(); err != nil {
		t.Fatalf("e1 exit after SIGTERM: %v", err)
	}
	clustertest.WaitFor(t, 15*time.Second, "e1 gone from e2's view", func() bool { return webtest.StateOf(t, p2.url, "e1") != "alive" })
	p1 = startProcOn(t, "e1", httpAddr, gossipAddr, "")
	took := clustertest.WaitFor(t, 45*time.Second, "the restarted seed back in one cluster", converged(p1, p2, p3))
	t.Logf("restarted seed merged after %v", took.Round(time.Millisecond))
	webtest.WaitReady(t, 30*time.Second, p1.url)

	alice := webtest.Login(t, p1.url, "alice")
	a := webtest.Dial(t, p1.url, alice, webtest.DialOptions{})
	a.Send(map[string]string{"type": "join", "room": "lobby"})
	joined := a.Expect("joined", 10*time.Second, nil)
	var texts []string
	for _, m := range joined.Frames("history") {
		texts = append(texts, m.Str("text"))
	}
	if !slices.Contains(texts, "before the restart") {
		t.Fatalf("a user on the restarted seed sees the room's history as %q", texts)
	}
}

// TestEndToEndRestartFindsKnownPeers: a node with --data keeps the peers
// it knew, so that after every node restarted, the seed fresh and
// knowing no one, the node started again without --join finds it.
func TestEndToEndRestartFindsKnownPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two processes twice; skipped with -short")
	}
	h1, g1 := clustertest.FreeAddr(t, false), clustertest.FreeAddr(t, true)
	h2, g2 := clustertest.FreeAddr(t, false), clustertest.FreeAddr(t, true)
	data := "--data=" + t.TempDir()
	alive := func(procs ...*proc) func() bool {
		return func() bool {
			for _, p := range procs {
				v, ok := webtest.GetCluster(t, p.url)
				n := 0
				for _, m := range v.Nodes {
					if m.State == "alive" {
						n++
					}
				}
				if !ok || n != len(procs) {
					return false
				}
			}
			return true
		}
	}
	p1 := startProcOn(t, "k1", h1, g1, "")
	p2 := startProcOn(t, "k2", h2, g2, p1.gossip, data)
	clustertest.WaitFor(t, 30*time.Second, "two nodes alive in both views", alive(p1, p2))

	for _, p := range []*proc{p2, p1} {
		p.Stop(syscall.SIGTERM, 20*time.Second)
		if err := p.Err(); err != nil {
			t.Fatalf("%s exit after SIGTERM: %v", p.name, err)
		}
	}
	p1 = startProcOn(t, "k1", h1, g1, "")
	p2 = startProcOn(t, "k2", h2, g2, "", data)
	took := clustertest.WaitFor(t, 30*time.Second, "the node without --join back with the peer it knew", alive(p1, p2))
	t.Logf("found again after %v", took.Round(time.Millisecond))
}
