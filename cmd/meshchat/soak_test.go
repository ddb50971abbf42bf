package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
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
	// With big messages a slow client's resume can exceed its queue
	// bound every time (docs/performance.md, "Soak test").
	soakPad   = flag.Int("soak-pad", 0, "TestSoak: bytes added to each firehose message")
	soakStall = flag.Duration("soak-stall", 25*time.Second, "TestSoak: how long a slow client stalls; 0 stalls none")
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
	// firehose room's history covers a stall.
	extra := []string{"--log-level", "info", "--login-limit", "1000000", "--queue-bytes", "65536", "--history", "5000"}
	if serveHas(t, "--max-conns-per-ip") {
		extra = append(extra, "--max-conns-per-ip", "0")
	}
	h := startChaosNodes(t, *soakBroker, func(i int) []string { return append(flags(i), extra...) })
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
			for range 3 {
				slow[rand.N(len(slow))].stall(*soakStall)
				stalls++
			}
		}
		if now.After(nextSample) {
			nextSample = now.Add(soakSample)
			for i, nd := range h.nodes {
				if kib, ok := vmRSS(nd.p); ok {
					rss[i].at = append(rss[i].at, now.Sub(began))
					rss[i].kib = append(rss[i].kib, kib)
				}
			}
		}
		if now.After(nextRestart) {
			nd := h.nodes[len(restarts)%len(h.nodes)]
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
	h.stop()

	// Delivery: exactly once, one order, per room, for its members.
	var problems []string
	sent, delivered, outages, rejoins, unrecovered := 0, 0, 0, 0, 0
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
		"outages=%d closeCodes=%v churnCuts=%d stalls=%d slowCuts(4008)=%d rejoins=%d unrecovered=%d restarts=%v",
		*soakBroker, ran.Round(time.Second), n, n/soakSSEEvery, sent, ackedN, delivered,
		outages, closes, cuts, stalls, closes[4008], rejoins, unrecovered, restarts)
	t.Logf("SOAK RSS over time:\n%s", strings.Join(mem, "\n"))
	if *soakStall > 0 && closes[4008] == 0 {
		t.Error("no slow client was cut off (4008): the stalls did not test slow consumers")
	}
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
