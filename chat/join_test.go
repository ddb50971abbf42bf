package chat

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
)

// failingHistory fails History while fail is set, after calling before:
// the room's owner being unreachable during a failover.
type failingHistory struct {
	*inproc.Broker
	fail   atomic.Bool
	before func()
}

func (b *failingHistory) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	if b.fail.Load() {
		b.before()
		return transport.HistoryResult{}, fmt.Errorf("%w: owner unreachable", transport.ErrUnavailable)
	}
	return b.Broker.History(ctx, ch, req)
}

// A join whose history fails is an error and nothing else: a message
// published while the history was being read must not reach the
// connection, which is not in the room (a client would take it as its new
// resume point and skip what came before it).
func TestJoinHistoryFailureDeliversNothing(t *testing.T) {
	fb := &failingHistory{}
	h := newHub(t, nil, "n1", func(c *Config) {
		fb.Broker = c.Broker.(*inproc.Broker)
		c.Broker = fb
	})
	// Loading revocations reads history too, in the background: done
	// before History starts failing, or it would call before again.
	waitCond(t, "revocations loaded", h.RevocationsLoaded)
	bob := connect(t, h, "bob")
	bob.join("lobby")
	alice := connect(t, h, "alice")
	fb.before = func() { bob.do(`{"type":"send","room":"lobby","text":"meanwhile"}`) }
	fb.fail.Store(true)
	alice.do(`{"type":"join","room":"lobby","after":"5-e"}`)
	for f := alice.next(); f.Type != "error" || f.Code != CodeUnavailable; f = alice.next() {
		if f.Type == "message" || f.Type == "joined" {
			t.Fatalf("failed join delivered %+v", f)
		}
	}
	bob.until("bob's message", func(f frame) bool { return f.Type == "message" && f.Text == "meanwhile" })
	alice.quiet("message after a failed join", isType("message"))

	// The retry works and the message comes with the history.
	fb.fail.Store(false)
	j := alice.join("lobby")
	if len(j.History) != 1 || j.History[0].Text != "meanwhile" {
		t.Fatalf("joined after the retry: %+v", j)
	}
	alice.quiet("message outside the history", isType("message"))
}
