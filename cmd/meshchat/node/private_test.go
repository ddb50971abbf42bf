package node_test

import (
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// A private room admits only its members, on every node: its history,
// presence and messages stay with them; its owner invites and removes;
// admins may enter.

func TestPrivateRoomMesh(t *testing.T) { testPrivateRoom(t, "mesh", "") }

func TestPrivateRoomRedis(t *testing.T) {
	srv := redistest.Start(t)
	testPrivateRoom(t, "redis", srv.URL())
}

func testPrivateRoom(t *testing.T, broker, redisURL string) {
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: broker, RedisURL: redisURL,
		Adjust: func(_ int, c *node.Config) { c.Admins = []string{"root"} }})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	const wait = 10 * time.Second
	dial := func(base, user string) *webtest.Conn {
		return webtest.Dial(t, base, webtest.Login(t, base, user), webtest.DialOptions{})
	}
	errorCode := func(c *webtest.Conn) string {
		return c.Expect("error", wait, nil).Str("code")
	}
	alice, bob, carol := dial(n1, "alice"), dial(n2, "bob"), dial(n2, "carol")

	alice.Send(map[string]any{"type": "join", "room": "secret", "private": true})
	if j := alice.ExpectNext("joined", wait); j["private"] != true || j.Str("owner") != "alice" {
		t.Fatalf("joined %v, want private, owned by alice", j)
	}
	alice.Send(map[string]string{"type": "send", "room": "secret", "text": "classified", "ref": "s1"})
	alice.Expect("message", wait, func(f webtest.Frame) bool { return f.Str("ref") == "s1" })

	// Not a member: no join, on either node; nor can a non-owner invite.
	bob.Send(map[string]string{"type": "join", "room": "secret"})
	if code := errorCode(bob); code != chat.CodeForbidden {
		t.Fatalf("uninvited join: %s", code)
	}
	bob.Send(map[string]string{"type": "invite", "room": "secret", "user": "bob"})
	if code := errorCode(bob); code != chat.CodeForbidden {
		t.Fatalf("invite by a non-owner: %s", code)
	}
	// A room that has messages cannot be taken private.
	carol.Join("lobby")
	carol.SendRetry("lobby", "hello", wait)
	bob.Send(map[string]any{"type": "join", "room": "lobby", "private": true})
	if code := errorCode(bob); code != chat.CodeRoomExists {
		t.Fatalf("making a public room private: %s", code)
	}

	// Invited, bob learns it on his connection and gets in, history and
	// all.
	alice.Send(map[string]string{"type": "invite", "room": "secret", "user": "bob", "ref": "i1"})
	alice.Expect("invited", wait, func(f webtest.Frame) bool { return f.Str("user") == "bob" && f.Str("ref") == "i1" })
	bob.Expect("invitation", wait, func(f webtest.Frame) bool { return f.Str("room") == "secret" && f.Str("by") == "alice" })
	bob.Send(map[string]string{"type": "join", "room": "secret"})
	j := bob.ExpectNext("joined", wait)
	if h := j.Frames("history"); len(h) != 1 || h[0].Str("text") != "classified" {
		t.Fatalf("member's history %v", h)
	}
	carol.Send(map[string]string{"type": "join", "room": "secret"})
	if code := errorCode(carol); code != chat.CodeForbidden {
		t.Fatalf("carol's join: %s", code)
	}
	// An admin may enter.
	root := dial(n2, "root")
	root.Send(map[string]string{"type": "join", "room": "secret"})
	root.ExpectNext("joined", wait)

	// Removed, bob's connection in the room closes, and the room refuses
	// the next one.
	alice.Send(map[string]string{"type": "remove", "room": "secret", "user": "bob"})
	alice.Expect("removed", wait, nil)
	if code := bob.Closed(wait); code != chat.CloseRemoved {
		t.Fatalf("removed member's socket closed with %d, want %d", code, chat.CloseRemoved)
	}
	bob = dial(n2, "bob")
	bob.Send(map[string]string{"type": "join", "room": "secret"})
	if code := errorCode(bob); code != chat.CodeForbidden {
		t.Fatalf("join after removal: %s", code)
	}
}
