package node_test

import (
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// A DM has one id on every copy, and a send or DM repeated with the same
// ref from a new connection, on another node, is acknowledged with the
// original id and stored once: with each broker.

func TestMessageIDsMesh(t *testing.T) {
	testMessageIDs(t, "mesh", "")
}

func TestMessageIDsRedis(t *testing.T) {
	srv := redistest.Start(t)
	testMessageIDs(t, "redis", srv.URL())
}

func testMessageIDs(t *testing.T, broker, redisURL string) {
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: broker, RedisURL: redisURL})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	const wait = 10 * time.Second
	dial := func(t *testing.T, base string, s webtest.Session) *webtest.Conn {
		return webtest.Dial(t, base, s, webtest.DialOptions{})
	}
	hasRef := func(ref string) func(webtest.Frame) bool {
		return func(f webtest.Frame) bool { return f.Str("ref") == ref }
	}

	t.Run("dm", func(t *testing.T) {
		alice, bob := webtest.Login(t, n1, "alice"), webtest.Login(t, n2, "bob")
		a1, a2 := dial(t, n1, alice), dial(t, n1, alice)
		b1, b2 := dial(t, n2, bob), dial(t, n1, bob)
		dm := map[string]string{"type": "dm", "to": "bob", "text": "psst", "ref": "d1"}
		a1.Send(dm)
		ack := a1.Expect("dm", wait, hasRef("d1"))
		id := ack.Str("id")
		for i, c := range []*webtest.Conn{a2, b1, b2} {
			if f := c.Expect("dm", wait, nil); f.Str("id") != id || f.Str("text") != "psst" {
				t.Errorf("copy %d: %v, want id %s as the sender's", i, f, id)
			}
		}

		// The sender's connection is gone before it saw the ack (as far
		// as the client knows): a new one retries on the other node,
		// where the user had no connection, so the original DM was
		// never delivered there.
		a1.Close()
		a3 := dial(t, n2, alice)
		a3.Send(dm)
		if f := a3.ExpectAny(wait, hasRef("d1")); f.Type() != "dm" || f.Str("id") != id {
			t.Fatalf("retry answered %v, want the dm with id %s", f, id)
		}
		isDM := func(f webtest.Frame) bool { return f.Type() == "dm" }
		b1.Quiet(500*time.Millisecond, "second copy of a retried DM", isDM)
		a2.Quiet(0, "second copy of a retried DM", isDM)

		// Stored once, under the one id, in both inboxes; and the id
		// resumes either inbox.
		for _, c := range []*webtest.Conn{dial(t, n1, bob), dial(t, n1, alice)} {
			c.Send(map[string]string{"type": "dms"})
			h := c.Expect("dm_history", wait, nil).Frames("history")
			if len(h) != 1 || h[0].Str("id") != id || h[0].Str("text") != "psst" {
				t.Errorf("%s's dm_history %v, want the one DM %s", c.Welcome.Str("user"), h, id)
			}
			c.Send(map[string]string{"type": "dms", "after": id})
			if f := c.Expect("dm_history", wait, nil); f["recovered"] != true || len(f.Frames("history")) != 0 {
				t.Errorf("%s's dm_history after %s: %v, want recovered and empty", c.Welcome.Str("user"), id, f)
			}
		}
	})

	t.Run("room send", func(t *testing.T) {
		carol, dave := webtest.Login(t, n1, "carol"), webtest.Login(t, n2, "dave")
		c1, d := dial(t, n1, carol), dial(t, n2, dave)
		c1.Join("retry")
		d.Join("retry")
		send := map[string]string{"type": "send", "room": "retry", "text": "once", "ref": "r1"}
		c1.Send(send)
		id := c1.Expect("message", wait, hasRef("r1")).Str("id")
		d.Expect("message", wait, nil)
		c1.Close()
		c2 := dial(t, n2, carol)
		c2.Join("retry")
		c2.Send(send)
		if f := c2.ExpectAny(wait, hasRef("r1")); f.Type() != "message" || f.Str("id") != id {
			t.Fatalf("retry answered %v, want the message with id %s", f, id)
		}
		d.Quiet(500*time.Millisecond, "second copy of a retried send", func(f webtest.Frame) bool { return f.Type() == "message" })
		h := dial(t, n1, dave).Join("retry").Frames("history")
		if len(h) != 1 || h[0].Str("id") != id {
			t.Errorf("history %v, want the one message %s", h, id)
		}
	})
}
