package chat

import (
	"context"
	"fmt"
	"strings"
	"sync"
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
	bob := connect(t, h, "bob")
	bob.join("lobby")
	alice := connect(t, h, "alice")
	// The hub retries an unavailable history read for a while; one
	// message is published during the first attempt.
	var once sync.Once
	fb.before = func() { once.Do(func() { bob.do(`{"type":"send","room":"lobby","text":"meanwhile"}`) }) }
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

// lossyPublish answers the first publishes to rooms with ErrUnavailable,
// after storing them when stored is set: an answer lost on the way back.
type lossyPublish struct {
	*inproc.Broker
	failures atomic.Int32
	stored   bool
}

func (b *lossyPublish) Publish(ctx context.Context, ch string, data []byte, o transport.PublishOptions) (transport.Publication, error) {
	if strings.HasPrefix(ch, roomPrefix) && b.failures.Add(-1) >= 0 {
		if b.stored {
			if _, err := b.Broker.Publish(ctx, ch, data, o); err != nil {
				return transport.Publication{}, err
			}
		}
		return transport.Publication{}, fmt.Errorf("%w: owner unreachable", transport.ErrUnavailable)
	}
	return b.Broker.Publish(ctx, ch, data, o)
}

// A send that meets a short broker outage is served when it ends, not
// refused, and stored once even without a ref when an attempt that
// looked failed was in fact stored.
func TestSendWaitsOutShortOutage(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprintf("stored=%v", stored), func(t *testing.T) {
			lb := &lossyPublish{stored: stored}
			h := newHub(t, nil, "n1", func(c *Config) {
				lb.Broker = c.Broker.(*inproc.Broker)
				c.Broker = lb
			})
			alice, bob := connect(t, h, "alice"), connect(t, h, "bob")
			alice.join("lobby")
			bob.join("lobby")
			lb.failures.Store(3)
			alice.do(`{"type":"send","room":"lobby","text":"no ref"}`)
			alice.do(`{"type":"send","room":"lobby","text":"with ref","ref":"r1"}`)
			if f := bob.expect("message"); f.Text != "no ref" {
				t.Fatalf("got %+v", f)
			}
			if f := bob.expect("message"); f.Text != "with ref" {
				t.Fatalf("got %+v", f)
			}
			bob.quiet("duplicate", isType("message"))
			alice.quiet("error", isType("error"))
		})
	}
}

// heldDeliveries holds back the live deliveries to this node while hold
// is set, and hands them over in order on release, while Publish and
// History work: the node's subscription lagging behind the stream, as a
// mesh node's does when a room's owner died, until the new owner's
// announcement has it catch up.
type heldDeliveries struct {
	*inproc.Broker
	mu   sync.Mutex
	hold bool
	held []heldPub
	h    transport.Handler
}

type heldPub struct {
	ch  string
	pub transport.Publication
}

func (b *heldDeliveries) Start(ctx context.Context, h transport.Handler) error {
	b.h = h
	return b.Broker.Start(ctx, b)
}

func (b *heldDeliveries) HandlePublication(ch string, pub transport.Publication) {
	b.mu.Lock()
	if b.hold {
		b.held = append(b.held, heldPub{ch, pub})
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.h.HandlePublication(ch, pub)
}

func (b *heldDeliveries) release() {
	b.mu.Lock()
	held := b.held
	b.hold, b.held = false, nil
	b.mu.Unlock()
	for _, p := range held {
		b.h.HandlePublication(p.ch, p.pub)
	}
}

// A send whose ack was lost with its connection is retried by the next
// one after a resume whose history already holds it and what followed
// it; the live copies come later. The retry's ack must not move the
// member's position back: what followed is not delivered a second time.
func TestResumedRetryThenLateDeliveries(t *testing.T) {
	hb := &heldDeliveries{}
	h := newHub(t, nil, "n1", func(c *Config) {
		hb.Broker = c.Broker.(*inproc.Broker)
		c.Broker = hb
	})
	carol, alice := connect(t, h, "carol"), connect(t, h, "alice")
	carol.join("lobby")
	alice.join("lobby")
	carol.do(`{"type":"send","room":"lobby","text":"before"}`)
	before := alice.expect("message")

	hb.mu.Lock()
	hb.hold = true
	hb.mu.Unlock()
	alice.do(`{"type":"send","room":"lobby","text":"lost","ref":"r1"}`)
	carol.do(`{"type":"send","room":"lobby","text":"after 1"}`)
	carol.do(`{"type":"send","room":"lobby","text":"after 2"}`)
	if err := alice.c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	again := connect(t, h, "alice")
	again.do(`{"type":"join","room":"lobby","after":%q}`, before.ID)
	j := again.expect("joined")
	if !*j.Recovered || len(j.History) != 3 {
		t.Fatalf("resume: %+v, want the 3 messages after %s", j, before.ID)
	}
	again.do(`{"type":"send","room":"lobby","text":"lost","ref":"r1"}`)
	if f := again.expect("message"); f.ID != j.History[0].ID || f.ref() != "r1" {
		t.Fatalf("retry's ack %+v, want %s with ref r1", f, j.History[0].ID)
	}

	hb.release()
	carol.do(`{"type":"send","room":"lobby","text":"end"}`)
	if f := again.expect("message"); f.Text != "end" {
		t.Fatalf("after the late deliveries: %+v, want only the new message", f)
	}
	var got []frame
	for len(got) == 0 || got[len(got)-1].Text != "end" {
		got = append(got, carol.until("message", isType("message")))
	}
	if len(got) != 5 {
		t.Fatalf("carol got %s, want each message once", ids(got))
	}
}
