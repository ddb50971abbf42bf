package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport/inproc"
)

const waitFor = 5 * time.Second

func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m) }

// newHub starts a hub, the one way every chat test gets a running hub:
// named node, on its own inproc broker joined to net (nil: a private
// network). mod may change the config, the broker included: wrap the
// inproc one, or replace it (with a Redis broker). The hub and its
// broker are shut down by t.Cleanup.
func newHub(t testing.TB, net *inproc.Network, node string, mod func(*Config)) *Hub {
	t.Helper()
	b, err := inproc.New(inproc.Config{Node: node, Network: net})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Node: node, Broker: b, Nodes: func() []string { return []string{"http://" + node} }}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last registered first: the hub, then its broker, then
	// the inproc broker (a wrapper closed it already; a replacement left
	// it unused).
	clustertest.Cleanup(t, "inproc broker close", b.Close)
	clustertest.Cleanup(t, "broker close", cfg.Broker.Close)
	clustertest.Cleanup(t, "shutdown", h.Shutdown)
	return h
}

// frame is any server frame, decoded loosely.
type frame struct {
	Type      string   `json:"type"`
	Room      string   `json:"room"`
	ID        string   `json:"id"`
	From      string   `json:"from"`
	By        string   `json:"by"`
	To        string   `json:"to"`
	Text      string   `json:"text"`
	TS        int64    `json:"ts"`
	Ref       *string  `json:"ref"`
	Code      string   `json:"code"`
	Message   string   `json:"message"`
	User      string   `json:"user"`
	Node      string   `json:"node"`
	Nodes     []string `json:"nodes"`
	Online    *bool    `json:"online"`
	Members   []string `json:"members"`
	History   []frame  `json:"history"`
	Recovered *bool    `json:"recovered"`
}

func (f frame) ref() string {
	if f.Ref == nil {
		return ""
	}
	return *f.Ref
}

// tconn drives one Client the way the web writer would: woken by the
// client's notify function, it drains the queue.
type tconn struct {
	t     testing.TB
	c     *Client
	ready chan struct{} // buffer 1: frames were queued or c disconnected
	queue [][]byte
}

func newTconn(t testing.TB, c *Client) *tconn {
	tc := &tconn{t: t, c: c, ready: make(chan struct{}, 1)}
	c.SetNotify(func() {
		select {
		case tc.ready <- struct{}{}:
		default:
		}
	})
	return tc
}

func connect(t testing.TB, h *Hub, user string) *tconn {
	t.Helper()
	return connectSession(t, h, user, "")
}

func connectSession(t testing.TB, h *Hub, user, session string) *tconn {
	t.Helper()
	c, err := h.Connect(context.Background(), user, session)
	if err != nil {
		t.Fatal(err)
	}
	tc := newTconn(t, c)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if f := tc.next(); f.Type != "welcome" || f.User != user || f.Node != h.node {
		t.Fatalf("first frame = %+v, want welcome", f)
	}
	return tc
}

func (tc *tconn) do(format string, args ...any) {
	tc.t.Helper()
	if err := tc.c.Handle(context.Background(), []byte(fmt.Sprintf(format, args...))); err != nil {
		tc.t.Fatalf("Handle: %v", err)
	}
}

// next returns the next frame, waiting up to waitFor.
func (tc *tconn) next() frame {
	tc.t.Helper()
	f, ok := tc.tryNext(waitFor)
	if !ok {
		tc.t.Fatalf("%s: no frame within %v", tc.c.user, waitFor)
	}
	return f
}

func (tc *tconn) tryNext(d time.Duration) (frame, bool) {
	tc.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(tc.queue) == 0 {
		// Asked before draining: what was queued before a disconnect
		// is still delivered.
		closed := tc.c.Disconnected()
		tc.queue = tc.c.Drain(tc.queue)
		if len(tc.queue) > 0 {
			break
		}
		if closed {
			return frame{}, false
		}
		select {
		case <-tc.ready:
		case <-timer.C:
			return frame{}, false
		}
	}
	raw := tc.queue[0]
	tc.queue = tc.queue[1:]
	var f frame
	if err := json.Unmarshal(raw, &f); err != nil {
		tc.t.Fatalf("bad frame %q: %v", raw, err)
	}
	return f, true
}

// expect returns the next frame and checks its type.
func (tc *tconn) expect(typ string) frame {
	tc.t.Helper()
	f := tc.next()
	if f.Type != typ {
		tc.t.Fatalf("%s: got %+v, want type %q", tc.c.user, f, typ)
	}
	return f
}

// until skips frames until one satisfies ok.
func (tc *tconn) until(what string, ok func(frame) bool) frame {
	tc.t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		f, got := tc.tryNext(time.Until(deadline))
		if got && ok(f) {
			return f
		}
	}
	tc.t.Fatalf("%s: no %s within %v", tc.c.user, what, waitFor)
	return frame{}
}

// quiet asserts that no frame matching ok is queued right now. Delivery
// through an inproc network completes before Publish returns, so what a
// test has caused so far is already queued.
func (tc *tconn) quiet(what string, ok func(frame) bool) {
	tc.t.Helper()
	tc.queue = tc.c.Drain(tc.queue)
	for _, raw := range tc.queue {
		var f frame
		_ = json.Unmarshal(raw, &f)
		if ok(f) {
			tc.t.Fatalf("%s: unexpected %s: %s", tc.c.user, what, raw)
		}
	}
}

func (tc *tconn) join(room string) frame {
	tc.t.Helper()
	tc.do(`{"type":"join","room":%q}`, room)
	return tc.until("joined "+room, func(f frame) bool { return f.Type == "joined" && f.Room == room })
}

// disconnected waits for the hub to disconnect the client (for why).
func (tc *tconn) disconnected(why string) {
	tc.t.Helper()
	clustertest.WaitFor(tc.t, waitFor, tc.c.user+" disconnected by "+why, tc.c.Disconnected)
}

func isType(typ string) func(frame) bool {
	return func(f frame) bool { return f.Type == typ }
}

func ids(fs []frame) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.ID
	}
	return strings.Join(s, ",")
}
