package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport/mesh"
	"github.com/meshchat/meshchat/web/webtest"
)

// A deletion on one node reaches the room's members on another, leaves
// the message out of that node's history, and survives the death of the
// node that owned the room: a member who was away resumes on the
// survivor and is told. With each broker.

func TestDeleteMesh(t *testing.T) { testDelete(t, "mesh", "") }

func TestDeleteRedis(t *testing.T) {
	srv := redistest.Start(t)
	testDelete(t, "redis", srv.URL())
}

func testDelete(t *testing.T, broker, redisURL string) {
	// Three nodes: of two, the one left after the other's death keeps
	// ordering rooms only when it has the lower name (docs/cluster.md,
	// "Partitions").
	nodes := nodetest.StartCluster(t, 3, nodetest.Options{Broker: broker, RedisURL: redisURL,
		Adjust: func(_ int, c *node.Config) { c.Admins, c.APIKey = []string{"root"}, apiKey }})
	a, b := nodes[0].URL(), nodes[1].URL()
	// A room n1 owns on the mesh (Redis keeps every room itself).
	room := ""
	for i := 0; room == ""; i++ {
		if r := fmt.Sprintf("del%d", i); mesh.Owner([]string{"n1", "n2", "n3"}, "r:"+r) == "n1" {
			room = r
		}
	}
	const wait = 10 * time.Second
	deleted := func(id string) func(webtest.Frame) bool {
		return func(f webtest.Frame) bool { return f.Str("id") == id }
	}

	alice := webtest.Dial(t, a, webtest.Login(t, a, "alice"), webtest.DialOptions{})
	root := webtest.Dial(t, a, webtest.Login(t, a, "root"), webtest.DialOptions{})
	bobSession := webtest.Login(t, b, "bob")
	bob := webtest.Dial(t, b, bobSession, webtest.DialOptions{})
	for _, c := range []*webtest.Conn{alice, root, bob} {
		c.Join(room)
	}
	var ids []string
	for i := range 4 {
		alice.Send(map[string]string{"type": "send", "room": room, "text": fmt.Sprint("m", i), "ref": fmt.Sprint("r", i)})
		ids = append(ids, alice.Expect("message", wait, func(f webtest.Frame) bool { return f.Str("ref") == fmt.Sprint("r", i) }).Str("id"))
	}
	bob.Expect("message", wait, func(f webtest.Frame) bool { return f.Str("id") == ids[3] })

	// bob may not delete alice's message; alice may, live on both nodes.
	bob.Send(map[string]string{"type": "delete", "room": room, "id": ids[0], "ref": "b"})
	if f := bob.Expect("error", wait, nil); f.Str("code") != chat.CodeForbidden || f.Str("ref") != "b" {
		t.Fatalf("bob deleting alice's message: %v", f)
	}
	alice.Send(map[string]string{"type": "delete", "room": room, "id": ids[0]})
	if f := bob.Expect("deleted", wait, deleted(ids[0])); f.Str("room") != room || f.Str("by") != "alice" {
		t.Fatalf("bob on %s got %v", b, f)
	}
	carol := webtest.Dial(t, b, webtest.Login(t, b, "carol"), webtest.DialOptions{})
	if h := carol.Join(room).Frames("history"); len(h) != 3 || h[0].Str("id") != ids[1] {
		t.Fatalf("a fresh join on %s: history %v, want %v", b, h, ids[1:])
	}
	var hist struct{ Messages []webtest.Frame }
	apiCall(t, b, "GET", "/history?room="+room, "", &hist)
	if len(hist.Messages) != 3 || hist.Messages[0].Str("id") != ids[1] {
		t.Fatalf("server API history on %s: %v, want %v", b, hist.Messages, ids[1:])
	}

	// While bob is away, the admin deletes another message, then the
	// room's owner dies.
	bob.Close()
	root.Send(map[string]string{"type": "delete", "room": room, "id": ids[2]})
	root.Expect("deleted", wait, deleted(ids[2]))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := nodes[0].Kill(ctx); err != nil {
		t.Logf("kill n1: %v", err)
	}
	clustertest.WaitFor(t, 30*time.Second, "n2 to list n1 as dead", func() bool { return webtest.StateOf(t, b, "n1") == "dead" })

	bob = webtest.Dial(t, b, bobSession, webtest.DialOptions{})
	var joined webtest.Frame
	clustertest.WaitFor(t, 30*time.Second, "bob's resume on "+b, func() bool {
		bob.Send(map[string]string{"type": "join", "room": room, "after": ids[3]})
		joined = bob.ExpectAny(wait, func(f webtest.Frame) bool { return f.Type() == "joined" || f.Type() == "error" })
		return joined.Type() == "joined"
	})
	if joined["recovered"] != true || len(joined.Frames("history")) != 0 {
		t.Fatalf("resume after %s: %v, want recovered with nothing new", ids[3], joined)
	}
	// Every deletion after the resume point, the one bob saw live too.
	for _, want := range []struct{ id, by string }{{ids[0], "alice"}, {ids[2], "root"}} {
		if f := bob.ExpectNext("deleted", wait); f.Str("id") != want.id || f.Str("by") != want.by {
			t.Fatalf("after joined: %v, want %s deleted by %s", f, want.id, want.by)
		}
	}
	dave := webtest.Dial(t, b, webtest.Login(t, b, "dave"), webtest.DialOptions{})
	var got []string
	for _, m := range dave.Join(room).Frames("history") {
		got = append(got, m.Str("id"))
	}
	if want := []string{ids[1], ids[3]}; !slices.Equal(got, want) {
		t.Fatalf("history on %s after n1 died: %v, want %v", b, got, want)
	}
}
