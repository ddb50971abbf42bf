package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// The soak test: a three-node cluster of real processes holds thousands
// of connections for a long time, with churn (connections cut, then
// resumed), slow clients (readers that stall until the server cuts them
// off as slow consumers, then resume), and node restarts (SIGTERM and
// kill -9 in turn). Afterwards every acknowledged message must have
// reached every client of its room exactly once, in one order, every
// resume must have been recovered, and each node's memory must be flat.
// It runs only when asked:
//
//	go test ./cmd/meshchat -run Soak -soak 10m [-soak-conns 2000] [-soak-broker redis]
var (
	soakFor    = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 10m); 0 skips it")
	soakConns  = flag.Int("soak-conns", 2000, "TestSoak: client connections")
	soakBroker = flag.String("soak-broker", "mesh", "TestSoak: the broker, mesh or redis")
	// A stalled reader is cut off once the node's queue and the socket
	// buffers between them are full: about 4 MiB on loopback, which the
	// default firehose (80 messages of about 2 KB a second) fills within
	// the default stall.
	soakPad   = flag.Int("soak-pad", 2000, "TestSoak: bytes added to each firehose message")
	soakStall = flag.Duration("soak-stall", 40*time.Second, "TestSoak: how long a slow client stalls; 0 stalls none")
)

const (
	soakRooms    = 40 // each client is in one of them; one publisher each
	soakSSEEvery = 10 // every tenth client uses an events stream
	// The firehose room takes big messages fast; its readers are the
	// slow clients, stalled in turn.
	soakFirehose     = "firehose"
	soakFirehoseSize = 24
	soakFirehosePubs = 4
	soakSample       = 5 * time.Second
	// A slow client stalls again only this long after its last stall
	// ended: it reads faster than the room between stalls, and catches
	// up. (A client slower than its room for good falls out of the
	// retention whatever the server does.)
	soakStallCool = time.Minute
	// soakHeapAt is the resident memory (KiB) past which a node's heap
	// profile is written once, to see what holds it.
	soakHeapAt = 200 << 10
	// soakSilent is how long a connected client may go without a
	// message (its room has one a second): longer than its heartbeat
	// takes to give a dead connection up.
	soakSilent = chaosPingAfter + chaosPongTimeout + 10*time.Second
)

// soakRSS is one node's resident memory over time.
type soakRSS struct {
	at  []time.Duration
	kib []int64
}

func TestSoak(t *testing.T) {
	if *soakFor == 0 {
		t.Skip("soak test: run it with go test ./cmd/meshchat -run Soak -soak 10m (and -soak-conns N, -soak-broker redis)")
	}
	n := *soakConns
	raiseFileLimit(t, uint64(3*n+4096))
	flags := meshFlags(t)
	if *soakBroker == "redis" {
		flags = redisFlags(redistest.Start(t).URL())
	}
	// Every login and connection comes from this one address; the
	// firehose room's history (8,000 messages, 100 s of it) covers a
	// stall, or a connection the heartbeat gives up, and the catching up
	// after it.
	extra := []string{"--log-level", "info", "--login-limit", "1000000", "--queue-bytes", "65536", "--history", "8000"}
	if serveHas(t, "--max-conns-per-ip") {
		extra = append(extra, "--max-conns-per-ip", "0")
	}
	debug := make([]string, 3)
	for i := range debug {
		debug[i] = clustertest.FreeAddr(t, false)
	}
	h := startChaosNodes(t, *soakBroker, func(i int) []string {
		return append(append(flags(i), extra...), "--debug-addr", debug[i])
	})
	h.waitConverged(60 * time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(h.stop)
	pad := strings.Repeat("x", *soakPad)
	var slow []*chaosClient
	for i := range n {
		user := fmt.Sprintf("s%04d", i)
		home := h.nodes[i%len(h.nodes)].url()
		rooms := []string{fmt.Sprintf("soak-%02d", i%soakRooms)}
		fire := i >= soakRooms && i < soakRooms+soakFirehoseSize
		if fire {
			rooms = append(rooms, soakFirehose)
		}
		c := newChaosClient(user, webtest.Login(t, home, user), home, rooms)
		c.tick = 250 * time.Millisecond
		c.sse = i%soakSSEEvery == 5
		switch {
		case i < soakRooms:
			c.pubRooms, c.pubEvery = rooms[:1], time.Second
		case fire && i < soakRooms+soakFirehosePubs:
			c.pubRooms, c.pubEvery, c.pad = []string{soakFirehose}, 50*time.Millisecond, pad
		case fire:
			c.readBuffer = 16 << 10 // a stall fills the server's queue sooner
			slow = append(slow, c)
		}
		if c.pubRooms != nil {
			h.pubs = append(h.pubs, c)
			h.wg.Go(func() { c.publish(ctx) })
		}
		h.clients = append(h.clients, c)
		h.wg.Go(func() { c.run(ctx) })
	}
	if !clustertest.Eventually(3*time.Minute, h.allSettled) {
		h.stop()
		h.dumpClients(h.clients[:10])
		t.Fatalf("%d clients did not all connect and join within 3m", n)
	}
	t.Logf("SOAK: %d clients connected (%d on events streams), %d publishers", n, n/soakSSEEvery, len(h.pubs))

	// The run: churn every second, a stall every 10s, a restart every
	// minute (a third of the run when shorter), memory every 5s.
	h.setPublishing(true)
	began := time.Now()
	restartEvery := min(time.Minute, *soakFor/3)
	nextRestart, nextStall, nextSample := began.Add(restartEvery), began.Add(10*time.Second), began
	rss := make([]soakRSS, len(h.nodes))
	var restarts []string
	stalls := 0
	stallEnds := map[*chaosClient]time.Time{}
	slowCuts := 0
	heaped := make([]bool, len(h.nodes))
	silent := map[*chaosClient]bool{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for now := range tick.C {
		if now.Sub(began) >= *soakFor {
			break
		}
		for range max(1, n/200) {
			h.clients[rand.N(len(h.clients))].cut()
		}
		if *soakStall > 0 && now.After(nextStall) {
			nextStall = now.Add(10 * time.Second)
			picked := 0
			for _, i := range rand.Perm(len(slow)) {
				c := slow[i]
				if picked == 3 || !now.After(stallEnds[c].Add(soakStallCool)) {
					continue
				}
				c.stall(*soakStall)
				stallEnds[c] = now.Add(*soakStall)
				stalls++
				picked++
			}
		}
		if now.After(nextSample) {
			nextSample = now.Add(soakSample)
			for _, c := range h.clients {
				if !silent[c] && c.silentFor(soakSilent) {
					silent[c] = true
					t.Errorf("%s: connected and reading, but no message for %v", c.user, soakSilent)
					h.dumpClients([]*chaosClient{c})
					soakStacks(t, debug)
				}
			}
			for i, nd := range h.nodes {
				if kib, ok := vmRSS(nd.p); ok {
					rss[i].at = append(rss[i].at, now.Sub(began))
					rss[i].kib = append(rss[i].kib, kib)
					if kib > soakHeapAt && !heaped[i] {
						heaped[i] = true
						soakHeap(t, debug[i], fmt.Sprintf("%s-at-%dMiB", nd.name, kib>>10))
					}
				}
			}
		}
		if now.After(nextRestart) {
			nd := h.nodes[len(restarts)%len(h.nodes)]
			slowCuts += soakSlowCuts(nd) // its counter starts over
			restarts = append(restarts, h.soakRestart(nd, len(restarts)%2 == 1))
			nextRestart = time.Now().Add(restartEvery)
		}
	}
	ran := time.Since(began)

	h.setPublishing(false)
	if !clustertest.Eventually(2*time.Minute, h.allSettled) {
		t.Error("after the run: clients still reconnecting or with unacknowledged sends after 2m")
	}
	acked := h.acked()
	if !clustertest.Eventually(2*time.Minute, func() bool { return h.allHave(acked) }) {
		t.Error("not every client received every acknowledged message of its rooms within 2m")
	}
	for _, nd := range h.nodes {
		slowCuts += soakSlowCuts(nd)
	}
	h.stop()

	// Delivery: exactly once, one order, per room, for its members.
	var problems []string
	sent, delivered, outages, rejoins, unrecovered, abandoned := 0, 0, 0, 0, 0, 0
	closes := map[int]int{}
	var cuts int64
	for room, ids := range acked {
		seqs := map[string][]string{}
		for _, c := range h.clients {
			if r := c.room[room]; r != nil {
				seqs[c.user] = r.ids
			}
		}
		for _, p := range checkDelivery(seqs, ids) {
			problems = append(problems, "room "+room+": "+p)
		}
	}
	var suspects []*chaosClient
	for _, c := range h.clients {
		if len(c.problems) > 0 {
			suspects = append(suspects, c)
		}
		problems = append(problems, c.problems...)
		sent += len(c.acks) + len(c.pending)
		abandoned += c.abandoned
		cuts += c.cuts.Load()
		for name, r := range c.room {
			delivered += len(r.ids)
			if len(r.ids) < len(acked[name]) {
				suspects = append(suspects, c)
			}
			for _, j := range r.joins {
				if !j.rejoin || j.after == "" {
					continue // not a resume: nothing had arrived yet
				}
				rejoins++
				if !j.recovered {
					unrecovered++
					problems = append(problems, fmt.Sprintf("%s: rejoin of %s on %s at %s after %q not recovered",
						c.user, name, j.node, j.at.Format("15:04:05.000"), j.after))
				}
			}
		}
		for _, o := range c.outages {
			outages++
			closes[o.code]++
		}
	}
	for _, p := range limit(problems, 30) {
		t.Error(p)
	}
	if len(problems) > 30 {
		t.Errorf("... and %d more problems", len(problems)-30)
	}
	if t.Failed() {
		h.dumpClients(limit(suspects, 3))
	}
	ackedN := 0
	for _, ids := range acked {
		ackedN += len(ids)
	}

	// Memory: after a warm-up (the first fifth), the last third of each
	// node's samples against the first third, with a generous bound.
	var mem []string
	for i, s := range rss {
		line := fmt.Sprintf("%s:", h.nodes[i].name)
		for k := range s.kib {
			line += fmt.Sprintf(" %s=%dMiB", s.at[k].Round(time.Second), s.kib[k]>>10)
		}
		mem = append(mem, line)
		warm := len(s.kib) / 5
		tail := s.kib[warm:]
		if len(tail) < 6 {
			continue
		}
		first, last := mean(tail[:len(tail)/3]), mean(tail[len(tail)-len(tail)/3:])
		if last > first*3/2+64<<10 {
			t.Errorf("%s: memory grew from %dMiB (first third) to %dMiB (last third)", h.nodes[i].name, first>>10, last>>10)
		}
	}
	t.Logf("SOAK %s: ran %v with %d connections (%d on events streams): sent=%d acked=%d delivered=%d "+
		"outages=%d closeCodes=%v churnCuts=%d stalls=%d slowConsumerCuts=%d silentAbandoned=%d rejoins=%d unrecovered=%d restarts=%v",
		*soakBroker, ran.Round(time.Second), n, n/soakSSEEvery, sent, ackedN, delivered,
		outages, closes, cuts, stalls, slowCuts, abandoned, rejoins, unrecovered, restarts)
	t.Logf("SOAK RSS over time:\n%s", strings.Join(mem, "\n"))
	if *soakStall > 0 && slowCuts == 0 {
		t.Error("no slow client was cut off (meshchat_slow_consumer_disconnects_total): the stalls did not test slow consumers")
	}
}

// soakHeap writes the heap profile of the node whose debug listener is
// addr to a directory that outlives the test, and logs where.
func soakHeap(t *testing.T, addr, name string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap")
	if err != nil {
		t.Logf("heap profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	f := filepath.Join(os.TempDir(), "meshchat-soak-heap-"+name+".pb.gz")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Log(err)
		return
	}
	t.Logf("heap profile of %s: %s (go tool pprof -sample_index=inuse_space %s)", name, f, f)
}

// soakSlowCuts reads how many connections nd has cut off as slow
// consumers since it started (0 when it cannot tell).
func soakSlowCuts(nd *chaosNode) int {
	resp, err := http.Get(nd.url() + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "meshchat_slow_consumer_disconnects_total "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

// silentFor reports whether the client is connected, yet has had no
// message for d (keepalives do not count) since it last got one or its
// last stall ended.
func (c *chaosClient) silentFor(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	since := c.lastMsg
	if end := time.Unix(0, c.stallUntil.Load()); end.After(since) {
		since = end
	}
	return c.online && time.Since(since) > d
}

// soakStacks writes the goroutines of the nodes (from their debug
// listeners) and of the test process to a directory that outlives the
// test, and logs where.
func soakStacks(t *testing.T, debug []string) {
	dir, err := os.MkdirTemp("", "meshchat-soak-")
	if err != nil {
		t.Log(err)
		return
	}
	for i, addr := range debug {
		resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=2")
		if err != nil {
			t.Logf("n%d goroutines: %v", i+1, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("n%d.txt", i+1)), b, 0o644)
	}
	if f, err := os.Create(filepath.Join(dir, "test.txt")); err == nil {
		_ = pprof.Lookup("goroutine").WriteTo(f, 2)
		f.Close()
	}
	t.Logf("goroutines of the nodes and of the test: %s", dir)
}

// soakRestart stops nd (SIGKILL when kill, else SIGTERM), starts it
// again and waits for the cluster; it describes what it did.
func (h *chaosHarness) soakRestart(nd *chaosNode, kill bool) string {
	t := h.t
	sig, how := syscall.SIGTERM, "SIGTERM"
	if kill {
		sig, how = syscall.SIGKILL, "kill -9"
	}
	began := time.Now()
	if err := nd.p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-nd.p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30s of %s", nd.name, how)
	}
	stopped := time.Since(began)
	h.restart(nd)
	ready := h.waitConverged(60 * time.Second)
	return fmt.Sprintf("%s %s (down %v, ready %v)", how, nd.name, stopped.Round(time.Millisecond), ready.Round(time.Millisecond))
}

// vmRSS reads a running process's resident memory, in KiB.
func vmRSS(p *proc) (int64, bool) {
	if !p.Running() {
		return 0, false
	}
	f, err := os.Open("/proc/" + strconv.Itoa(p.Cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib, err == nil
		}
	}
	return 0, false
}

func mean(v []int64) int64 {
	var sum int64
	for _, x := range v {
		sum += x
	}
	return sum / int64(max(1, len(v)))
}

// raiseFileLimit raises the process's open-file limit towards want (the
// nodes it starts inherit it); it fails when the hard limit is below.
func raiseFileLimit(t *testing.T, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	if lim.Max < want {
		t.Fatalf("open-file hard limit %d, want %d: raise it (ulimit -Hn) or lower -soak-conns", lim.Max, want)
	}
	lim.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// serveHas reports whether meshchat serve has the flag.
func serveHas(t *testing.T, flag string) bool {
	out, _ := exec.Command(buildBinary(t), "serve", "--help").CombinedOutput()
	return bytes.Contains(out, []byte(flag+" "))
}
