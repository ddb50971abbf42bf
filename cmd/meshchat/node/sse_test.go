package node_test

import (
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// TestEventsAcrossNodes: with no sticky sessions an events stream and the
// posts of its user land on different nodes. A post on n2 reaches the
// stream on n1 with the id it answered, a retry of it on n1 answers the
// same id, and the stream resumes on n2 from its last event id with
// nothing lost and nothing twice.
func TestEventsAcrossNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	alice := webtest.Login(t, n1, "alice")
	bob := webtest.Login(t, n2, "bob")
	s := webtest.Events(t, n1, alice, webtest.EventsOptions{Rooms: []string{"general"}})
	s.ExpectNext("joined", 10*time.Second)

	body := map[string]string{"room": "general", "text": "from n2", "ref": "a1"}
	st, ack := alice.Post(t, n2, "/api/send", body)
	if st != 200 || ack.Str("id") == "" {
		t.Fatalf("send on n2: %d %v", st, ack)
	}
	if m := s.Expect("message", 10*time.Second, nil); m.Str("id") != ack.Str("id") || m.Str("text") != "from n2" {
		t.Fatalf("stream on n1 got %v, want id %s", m, ack.Str("id"))
	}
	if st, again := alice.Post(t, n1, "/api/send", body); st != 200 || again.Str("id") != ack.Str("id") {
		t.Fatalf("retry on n1: %d %v, want id %s", st, again, ack.Str("id"))
	}
	st, dm := bob.Post(t, n2, "/api/dm", map[string]string{"to": "alice", "text": "psst"})
	if st != 200 {
		t.Fatalf("dm on n2: %d %v", st, dm)
	}
	last := s.Expect("dm", 10*time.Second, nil).EventID()
	s.Close()

	for _, text := range []string{"m1", "m2", "m3"} {
		if st, f := bob.Post(t, n1, "/api/send", map[string]string{"room": "general", "text": text}); st != 200 {
			t.Fatalf("send %s: %d %v", text, st, f)
		}
	}
	bob.Post(t, n1, "/api/dm", map[string]string{"to": "alice", "text": "later"})
	r := webtest.Events(t, n2, alice, webtest.EventsOptions{Rooms: []string{"general"}, LastEventID: last})
	j := r.ExpectNext("joined", 10*time.Second)
	h := j.Frames("history")
	if j["recovered"] != true || len(h) != 3 || h[0].Str("text") != "m1" || h[2].Str("text") != "m3" {
		t.Fatalf("resumed on n2: %v", j)
	}
	d := r.ExpectNext("dm_history", 10*time.Second)
	if dh := d.Frames("history"); d["recovered"] != true || len(dh) != 1 || dh[0].Str("text") != "later" {
		t.Fatalf("DMs resumed on n2: %v", d)
	}
}
