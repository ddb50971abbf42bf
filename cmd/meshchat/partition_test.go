package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport/mesh"
	"github.com/meshchat/meshchat/web/webtest"
)

// TestPartitionHeals partitions a cluster of three real processes
// (pa | pb pc) by cutting pa's network link, with clients on both sides
// sending to two rooms, one ordered by pa and one by pb, then heals it.
// pa, without a majority, refuses (unavailable) and reports not ready;
// its client fails over to pb and resends with the same refs; pb and pc
// keep serving. Within 10 s of the heal every node reads one and the
// same history of each room, holding every acknowledged message exactly
// once, and the clients that stayed connected received exactly that
// sequence.
func TestPartitionHeals(t *testing.T) {
	lab := newNetLab(t)
	const apiKey = "partition-test-api-key-0123456789"
	aHTTP := net.JoinHostPort(lab.NodeHost, "8080")
	aGossip := net.JoinHostPort(lab.NodeHost, "7946")
	bHTTP, bGossip := net.JoinHostPort(lab.ClusterHost, lab.FreePort()), net.JoinHostPort(lab.ClusterHost, lab.FreePort())
	cHTTP, cGossip := net.JoinHostPort(lab.ClusterHost, lab.FreePort()), net.JoinHostPort(lab.ClusterHost, lab.FreePort())
	seeds := strings.Join([]string{aGossip, bGossip, cGossip}, ",")
	flags := []string{"--api-key", apiKey}
	// pa listens on both of its links and advertises the cluster one.
	startProcWrapped(t, lab.Wrap(), "pa", "0.0.0.0:8080", aGossip, seeds, append(flags, "--advertise-http", "http://"+aHTTP)...)
	startProcOn(t, "pb", bHTTP, bGossip, seeds, flags...)
	startProcOn(t, "pc", cHTTP, cGossip, seeds, flags...)
	a := "http://" + net.JoinHostPort(lab.TestHost, "8080") // over the test link
	b, c := "http://"+bHTTP, "http://"+cHTTP
	webtest.WaitReady(t, 30*time.Second, a, b, c)

	roomA, roomB := roomOwnedBy(t, "pa"), roomOwnedBy(t, "pb")
	rooms := []string{roomA, roomB}
	alice := dialPart(t, a, webtest.Login(t, a, "alice"), rooms)
	bob := dialPart(t, b, webtest.Login(t, b, "bob"), rooms)
	carol := dialPart(t, c, webtest.Login(t, c, "carol"), rooms)
	acked := map[string]bool{}
	sendAll := func(pc *partClient, phase string, n int) {
		for i := range n {
			for _, r := range rooms {
				text := fmt.Sprintf("%s %s %s %d", pc.s.User, phase, r, i)
				pc.sendUntilAcked(r, text, 20*time.Second)
				acked[text] = true
			}
		}
	}
	for _, pc := range []*partClient{alice, bob, carol} {
		sendAll(pc, "before", 3)
	}

	lab.Cut()
	// The link is really cut: each side declares the other dead, and
	// pa's cluster address does not answer from here.
	clustertest.WaitFor(t, 20*time.Second, "each side to see the other dead", func() bool {
		return statesAre(t, a, map[string]string{"pa": "alive", "pb": "dead", "pc": "dead"}) &&
			statesAre(t, b, map[string]string{"pa": "dead", "pb": "alive", "pc": "alive"})
	})
	if conn, err := net.DialTimeout("tcp", aHTTP, time.Second); err == nil {
		conn.Close()
		t.Fatalf("pa's cluster address %s still answers during the partition", aHTTP)
	}
	st, body := webtest.Get(t, a+"/readyz", nil)
	if st != http.StatusServiceUnavailable || !strings.Contains(string(body), "no quorum") {
		t.Fatalf("pa's /readyz during the partition: %d %s, want 503 naming the quorum", st, body)
	}
	if v := metricValue(t, a, "meshchat_cluster_quorum"); v != "0" {
		t.Fatalf("pa's meshchat_cluster_quorum = %q during the partition, want 0", v)
	}

	// The majority serves; pa refuses what needs ordering.
	sendAll(bob, "during", 3)
	sendAll(carol, "during", 3)
	for _, r := range rooms {
		text := "alice during " + r
		ref := alice.nextRef()
		if code := alice.sendOnce(r, text, ref, 20*time.Second); code != "unavailable" {
			t.Fatalf("pa answered alice's send to %s with %q during the partition, want unavailable", r, code)
		}
		alice.pending = append(alice.pending, pendingSend{room: r, text: text, ref: ref})
	}
	// alice's client fails over to the majority, resuming her rooms, and
	// sends again what pa refused, with the same refs.
	alice = alice.failOver(t, b, rooms)
	for _, p := range alice.pending {
		alice.resend(p, 20*time.Second)
		acked[p.text] = true
	}
	alice.pending = nil
	sendAll(alice, "failed-over", 2)

	lab.Heal()
	healed := time.Now()
	nodes := []string{a, b, c}
	var histories map[string][]historyEntry
	clustertest.WaitFor(t, 10*time.Second, "one view and one history per room on every node after the heal", func() bool {
		for _, n := range nodes {
			if st, _ := webtest.Get(t, n+"/readyz", nil); st != http.StatusOK {
				return false
			}
			if !statesAre(t, n, map[string]string{"pa": "alive", "pb": "alive", "pc": "alive"}) {
				return false
			}
		}
		histories = map[string][]historyEntry{}
		for _, r := range rooms {
			var ref []historyEntry
			for i, n := range nodes {
				h, ok := serverHistory(t, n, apiKey, r)
				if !ok || (i > 0 && !slices.Equal(h, ref)) {
					return false
				}
				ref = h
			}
			histories[r] = ref
		}
		return true
	})
	t.Logf("one view and one history per room %v after the heal", time.Since(healed).Round(time.Millisecond))

	// Every acknowledged message is in its room's history exactly once,
	// and nothing else is.
	seen := map[string]int{}
	for _, r := range rooms {
		for _, e := range histories[r] {
			seen[e.Text]++
		}
	}
	for text := range acked {
		if seen[text] != 1 {
			t.Errorf("acked %q is in the history %d times", text, seen[text])
		}
	}
	for text, n := range seen {
		if !acked[text] {
			t.Errorf("history holds %q (%d times), never acknowledged", text, n)
		}
	}
	// The clients that stayed connected received each room's history, in
	// its order, each message once.
	for _, pc := range []*partClient{bob, carol} {
		for _, r := range rooms {
			pc.receive(r, len(histories[r]), 10*time.Second)
			if got, want := pc.ids[r], ids(histories[r]); !slices.Equal(got, want) {
				t.Errorf("%s received in %s:\n%v\nhistory:\n%v", pc.s.User, r, got, want)
			}
		}
	}
	// pa serves the same history to a client that joins there now.
	dave := dialPart(t, a, webtest.Login(t, a, "dave"), nil)
	for _, r := range rooms {
		var got []string
		for _, m := range dave.c.Join(r).Frames("history") {
			got = append(got, m.Str("id"))
		}
		if want := ids(histories[r]); !slices.Equal(got, want) {
			t.Errorf("joined on pa after the heal, %s's history is\n%v\nwant\n%v", r, got, want)
		}
	}
}

// roomOwnedBy returns a room whose channel the rendezvous ranking of the
// test's three nodes gives to owner.
func roomOwnedBy(t *testing.T, owner string) string {
	for i := range 1000 {
		room := fmt.Sprintf("part%d", i)
		if mesh.Owner([]string{"pa", "pb", "pc"}, chat.RoomChannel(room)) == owner {
			return room
		}
	}
	t.Fatalf("no room owned by %s", owner)
	return ""
}

// statesAre reports whether base's /api/cluster shows the nodes in the
// given states.
func statesAre(t *testing.T, base string, want map[string]string) bool {
	view, ok := webtest.GetCluster(t, base)
	if !ok {
		return false
	}
	got := map[string]string{}
	for _, n := range view.Nodes {
		got[n.Name] = n.State
	}
	for name, st := range want {
		if got[name] != st {
			return false
		}
	}
	return true
}

// metricValue is the value of an unlabelled metric on base's /metrics.
func metricValue(t *testing.T, base, name string) string {
	_, body := webtest.Get(t, base+"/metrics", nil)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

type historyEntry struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

func ids(h []historyEntry) []string {
	out := make([]string, len(h))
	for i, e := range h {
		out[i] = e.ID
	}
	return out
}

// serverHistory reads room's history on base through the server API;
// false when the node does not answer 200.
func serverHistory(t *testing.T, base, key, room string) ([]historyEntry, bool) {
	st, body := webtest.API(t, base, key, "GET", "/history?room="+room+"&limit=1000", "")
	if st != http.StatusOK {
		return nil, false
	}
	var res struct {
		Messages []historyEntry `json:"messages"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("history of %s on %s: %v", room, base, err)
	}
	return res.Messages, true
}

// partClient is a connection that records, per room, the ids of the
// messages it receives, in order, whatever else it waits for.
type partClient struct {
	t       *testing.T
	c       *webtest.Conn
	s       webtest.Session
	ids     map[string][]string
	refs    int
	pending []pendingSend
}

type pendingSend struct{ room, text, ref string }

func dialPart(t *testing.T, base string, s webtest.Session, rooms []string) *partClient {
	pc := &partClient{t: t, c: webtest.Dial(t, base, s, webtest.DialOptions{}), s: s, ids: map[string][]string{}}
	for _, r := range rooms {
		for _, m := range pc.c.Join(r).Frames("history") {
			pc.ids[r] = append(pc.ids[r], m.Str("id"))
		}
	}
	return pc
}

// failOver connects the client's session to base and joins its rooms
// after the last message it received in each, as the browser client does
// when it moves to another node; the old connection is closed.
func (pc *partClient) failOver(t *testing.T, base string, rooms []string) *partClient {
	pc.c.Close()
	next := &partClient{t: t, c: webtest.Dial(t, base, pc.s, webtest.DialOptions{}), s: pc.s, ids: pc.ids, refs: pc.refs, pending: pc.pending}
	for _, r := range rooms {
		after := ""
		if n := len(pc.ids[r]); n > 0 {
			after = pc.ids[r][n-1]
		}
		next.record(next.c.JoinAfter(r, after).Frames("history"), r)
	}
	return next
}

func (pc *partClient) record(msgs []webtest.Frame, room string) {
	for _, m := range msgs {
		pc.ids[room] = append(pc.ids[room], m.Str("id"))
	}
}

func (pc *partClient) nextRef() string {
	pc.refs++
	return fmt.Sprintf("%s-%d", pc.s.User, pc.refs)
}

// sees records f when it is a message.
func (pc *partClient) sees(f webtest.Frame) {
	if f.Type() == "message" {
		pc.ids[f.Str("room")] = append(pc.ids[f.Str("room")], f.Str("id"))
	}
}

// sendOnce sends text to room with ref and waits for the answer: "" for
// the message's own copy (acknowledged), else the error's code.
func (pc *partClient) sendOnce(room, text, ref string, timeout time.Duration) string {
	pc.c.Send(map[string]string{"type": "send", "room": room, "text": text, "ref": ref})
	f := pc.c.ExpectAny(timeout, func(f webtest.Frame) bool {
		pc.sees(f)
		return (f.Type() == "message" || f.Type() == "error") && f.Str("ref") == ref
	})
	if f.Type() == "message" {
		return ""
	}
	return f.Str("code")
}

// sendUntilAcked sends text to room, again with the same ref after each
// unavailable answer, until it is acknowledged.
func (pc *partClient) sendUntilAcked(room, text string, timeout time.Duration) {
	pc.resend(pendingSend{room: room, text: text, ref: pc.nextRef()}, timeout)
}

func (pc *partClient) resend(p pendingSend, timeout time.Duration) {
	pc.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code := pc.sendOnce(p.room, p.text, p.ref, time.Until(deadline))
		if code == "" {
			return
		}
		if code != "unavailable" || time.Now().After(deadline) {
			pc.t.Fatalf("send %q by %s: %s", p.text, pc.s.User, code)
		}
	}
}

// receive records the messages that arrive until room has n of them.
func (pc *partClient) receive(room string, n int, timeout time.Duration) {
	pc.t.Helper()
	if len(pc.ids[room]) >= n {
		return
	}
	pc.c.ExpectAny(timeout, func(f webtest.Frame) bool {
		pc.sees(f)
		return len(pc.ids[room]) >= n
	})
}
