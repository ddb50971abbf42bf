package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
)

// noPresence is a broker without the PresenceManager half.
type noPresence struct{ transport.Broker }

func TestNewValidates(t *testing.T) {
	b, err := inproc.New(inproc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no node", Config{Broker: b}, nil},
		{"no broker", Config{Node: "n1"}, nil},
		{"no presence", Config{Node: "n1", Broker: noPresence{b}}, ErrNoPresence},
		{"negative queue", Config{Node: "n1", Broker: b, QueueBytes: -1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
	rates := []struct {
		rate      float64
		burst     int
		wantRate  float64
		wantBurst int
	}{
		{0, 0, 50, 110},
		{NoRateLimit, 0, 0, 0},
		{-5, 0, 0, 0},
		{10, 0, 10, 110},
		{200, 0, 200, 400},
		{200, 7, 200, 7},
	}
	for _, tt := range rates {
		h, err := New(Config{Node: "n", Broker: b, RateLimit: tt.rate, RateBurst: tt.burst})
		if err != nil {
			t.Fatal(err)
		}
		if h.rate != tt.wantRate || h.burst != tt.wantBurst {
			t.Errorf("rate %v burst %d -> %v/%d, want %v/%d", tt.rate, tt.burst, h.rate, h.burst, tt.wantRate, tt.wantBurst)
		}
		h.cancel()
	}
}

func TestWelcomeFirst(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	c, err := h.Connect(context.Background(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	tc := newTconn(t, c)
	f := tc.expect("welcome")
	if f.User != "alice" || f.Node != "n1" || !slices.Equal(f.Nodes, []string{"http://n1"}) {
		t.Fatalf("welcome %+v", f)
	}
	if _, err := h.Connect(context.Background(), "not valid", ""); err == nil {
		t.Fatal("connect with invalid user succeeded")
	}
}

func TestChatTwoUsers(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	alice, bob := connect(t, h, "alice"), connect(t, h, "bob")

	j := alice.join("general")
	if !slices.Equal(j.Members, []string{"alice"}) || len(j.History) != 0 || j.Recovered == nil || *j.Recovered {
		t.Fatalf("alice joined %+v", j)
	}
	j = bob.join("general")
	if !slices.Equal(j.Members, []string{"alice", "bob"}) {
		t.Fatalf("bob joined members %v", j.Members)
	}
	p := alice.expect("presence")
	if p.User != "bob" || p.Online == nil || !*p.Online || p.Room != "general" {
		t.Fatalf("presence %+v", p)
	}

	alice.do(`{"type":"send","room":"general","text":"hello","ref":"c1"}`)
	a := alice.expect("message")
	b := bob.expect("message")
	if a.ref() != "c1" || b.Ref != nil {
		t.Fatalf("ref on sender %q, on other %v", a.ref(), b.Ref)
	}
	if a.ID == "" || a.ID != b.ID || a.From != "alice" || b.Text != "hello" || b.Room != "general" || b.TS == 0 {
		t.Fatalf("messages %+v / %+v", a, b)
	}

	bob.do(`{"type":"leave","room":"general"}`)
	bob.expect("left")
	p = alice.expect("presence")
	if p.User != "bob" || *p.Online {
		t.Fatalf("presence after leave %+v", p)
	}
	bob.do(`{"type":"send","room":"general","text":"x","ref":"c2"}`)
	if e := bob.expect("error"); e.Code != CodeNotJoined || e.ref() != "c2" {
		t.Fatalf("send after leave: %+v", e)
	}
}

func TestFrameErrors(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	c := connect(t, h, "alice")
	tests := []struct{ in, code, ref string }{
		{`{"type":"nope","ref":"r1"}`, CodeUnknownType, "r1"},
		{`{"type":"send",`, CodeBadFrame, ""},
		{`{"type":"join","room":"bad room","ref":"r2"}`, CodeBadRoom, "r2"},
		{`{"type":"dm","to":"","text":"x","ref":"r3"}`, CodeBadName, "r3"},
		{`{"type":"send","room":"general","text":"","ref":"r4"}`, CodeBadText, "r4"},
		{`{"type":"send","room":"general","text":"hi","ref":"r5"}`, CodeNotJoined, "r5"},
		{`{"type":"typing","room":"general"}`, CodeNotJoined, ""},
		{`{"type":"leave","room":"general"}`, CodeNotJoined, ""},
	}
	for _, tt := range tests {
		c.do("%s", tt.in)
		e := c.expect("error")
		if e.Code != tt.code || e.ref() != tt.ref || e.Message == "" {
			t.Errorf("%s: got %+v, want %s ref %q", tt.in, e, tt.code, tt.ref)
		}
	}
	c.do(`{"type":"ping","ref":"p"}`)
	if f := c.expect("pong"); f.ref() != "p" {
		t.Fatalf("pong %+v", f)
	}
}

func sendN(tc *tconn, room string, n int, prefix string) {
	for i := range n {
		tc.do(`{"type":"send","room":%q,"text":"%s%d"}`, room, prefix, i)
	}
}

func TestResume(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.HistoryPage = 3 })
	alice := connect(t, h, "alice")
	alice.join("general")
	sendN(alice, "general", 6, "m")
	var got []frame
	for range 6 {
		got = append(got, alice.expect("message"))
	}

	tests := []struct {
		name      string
		after     string
		recovered bool
		want      []frame
	}{
		{"after second", got[1].ID, true, got[2:]},
		{"after last", got[5].ID, true, []frame{}},
		{"no after: latest page", "", false, got[3:]},
		{"garbage", "not-an-id", false, got[3:]},
		{"unparsable", "%%%", false, got[3:]},
		{"other epoch", formatID(2, "elsewhere"), false, got[3:]},
		{"future offset", formatID(99, strings.SplitN(got[0].ID, "-", 2)[1]), false, got[3:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bob := connect(t, h, "bob")
			bob.do(`{"type":"join","room":"general","after":%q}`, tt.after)
			j := bob.until("joined", isType("joined"))
			if j.Recovered == nil || *j.Recovered != tt.recovered {
				t.Fatalf("recovered %v, want %v", j.Recovered, tt.recovered)
			}
			if ids(j.History) != ids(tt.want) {
				t.Fatalf("history %s, want %s", ids(j.History), ids(tt.want))
			}
			for _, m := range j.History {
				if m.Type != "message" || m.Room != "general" || m.From != "alice" || m.Ref != nil {
					t.Fatalf("history item %+v", m)
				}
			}
			// Joining again resumes too.
			bob.do(`{"type":"join","room":"general","after":%q}`, got[4].ID)
			j = bob.until("joined", isType("joined"))
			if !*j.Recovered || ids(j.History) != got[5].ID {
				t.Fatalf("rejoin: %+v", j)
			}
		})
	}
}

// TestJoinNoGapNoDup joins while messages are being published and
// checks that history plus live messages are every message once, in
// order.
func TestJoinNoGapNoDup(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit = NoRateLimit })
	sender := connect(t, h, "sender")
	sender.join("general")
	sendN(sender, "general", 5, "pre")
	first := sender.until("message", isType("message"))

	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			_ = sender.c.Handle(context.Background(), []byte(fmt.Sprintf(`{"type":"send","room":"general","text":"m%d"}`, i)))
		}
	}()
	var readers []*tconn
	for i := range 5 {
		r := connect(t, h, fmt.Sprintf("r%d", i))
		if i%2 == 0 {
			r.do(`{"type":"join","room":"general","after":%q}`, first.ID)
		} else {
			r.do(`{"type":"join","room":"general"}`)
		}
		readers = append(readers, r)
	}
	<-done
	last := formatID(n+5, strings.SplitN(first.ID, "-", 2)[1])
	for i, r := range readers {
		j := r.until("joined", isType("joined"))
		if i%2 == 0 && !*j.Recovered {
			t.Fatalf("reader %d not recovered", i)
		}
		seq := j.History
		for len(seq) == 0 || seq[len(seq)-1].ID != last {
			f := r.next()
			if f.Type == "message" {
				seq = append(seq, f)
			}
		}
		start, _, _ := parseID(seq[0].ID)
		if i%2 == 0 && start != 2 {
			t.Fatalf("reader %d resumed at %d, want 2", i, start)
		}
		for k, f := range seq {
			off, _, _ := parseID(f.ID)
			if off != start+uint64(k) {
				t.Fatalf("reader %d: gap or duplicate at %d: %s", i, k, ids(seq))
			}
		}
	}
}

func TestOrderingConcurrentSenders(t *testing.T) {
	net := inproc.NewNetwork()
	h1 := newHub(t, net, "n1", func(c *Config) { c.RateLimit = NoRateLimit })
	h2 := newHub(t, net, "n2", func(c *Config) { c.RateLimit = NoRateLimit })
	const senders, per = 4, 50
	var receivers []*tconn
	for i := range 3 {
		h := h1
		if i == 2 {
			h = h2
		}
		r := connect(t, h, fmt.Sprintf("recv%d", i))
		r.join("general")
		receivers = append(receivers, r)
	}
	var wg sync.WaitGroup
	for s := range senders {
		h := h1
		if s%2 == 1 {
			h = h2
		}
		tc := connect(t, h, fmt.Sprintf("send%d", s))
		tc.join("general")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				_ = tc.c.Handle(context.Background(), []byte(fmt.Sprintf(`{"type":"send","room":"general","text":"%d-%d"}`, s, i)))
			}
		}()
	}
	wg.Wait()
	var orders []string
	for _, r := range receivers {
		var got []string
		for len(got) < senders*per {
			if f := r.next(); f.Type == "message" {
				got = append(got, f.ID+"="+f.Text)
			}
		}
		orders = append(orders, strings.Join(got, " "))
	}
	for i := 1; i < len(orders); i++ {
		if orders[i] != orders[0] {
			t.Fatalf("receiver %d saw a different order", i)
		}
	}
}

func TestSlowConsumer(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.QueueBytes = 4096; c.RateLimit = NoRateLimit })
	fast, slow := connect(t, h, "fast"), connect(t, h, "slow")
	slow.join("general")
	fast.join("general")
	text := strings.Repeat("x", 200)
	for i := 0; i < 100 && !slow.c.isClosed(); i++ {
		fast.do(`{"type":"send","room":"general","text":"%s"}`, text)
		// The fast reader keeps up.
		fast.until("message", isType("message"))
	}
	slow.disconnected("slow consumer")
	if code, reason := slow.c.CloseReason(); code != CloseSlowConsumer || reason != "slow_consumer" {
		t.Fatalf("close %d %q", code, reason)
	}
	if slow.c.Queued() != 0 {
		t.Fatal("queue of a slow consumer was kept")
	}
	if err := slow.c.Handle(context.Background(), []byte(`{"type":"ping"}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Handle after disconnect: %v", err)
	}
	if fast.c.isClosed() {
		t.Fatal("fast reader was disconnected")
	}
	// The slow consumer's leave runs on Close; presence follows.
	_ = slow.c.Close(context.Background())
	fast.until("slow offline", func(f frame) bool { return f.Type == "presence" && f.User == "slow" && !*f.Online })
}

func TestPresenceTwoTabs(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	bob := connect(t, h, "bob")
	bob.join("general")
	tab1, tab2 := connect(t, h, "alice"), connect(t, h, "alice")
	tab1.join("general")
	bob.until("alice online", func(f frame) bool { return f.Type == "presence" && f.User == "alice" && *f.Online })
	j := tab2.join("general")
	if !slices.Equal(j.Members, []string{"alice", "bob"}) {
		t.Fatalf("members %v", j.Members)
	}
	tab1.do(`{"type":"leave","room":"general"}`)
	tab1.expect("left")
	bob.quiet("presence", isType("presence"))
	_ = tab2.c.Close(context.Background())
	f := bob.until("alice offline", isType("presence"))
	if f.User != "alice" || *f.Online {
		t.Fatalf("presence %+v", f)
	}
}

func TestPresenceTwoNodes(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	bob := connect(t, h1, "bob")
	bob.join("general")
	a1, a2 := connect(t, h1, "alice"), connect(t, h2, "alice")
	a2.join("general")
	bob.until("alice online", func(f frame) bool { return f.Type == "presence" && f.User == "alice" && *f.Online })
	a1.join("general")
	carol := connect(t, h2, "carol")
	if j := carol.join("general"); !slices.Equal(j.Members, []string{"alice", "bob", "carol"}) {
		t.Fatalf("members seen on n2: %v", j.Members)
	}
	bob.until("carol online", func(f frame) bool { return f.Type == "presence" && f.User == "carol" })
	_ = a1.c.Close(context.Background())
	bob.quiet("alice presence", func(f frame) bool { return f.Type == "presence" && f.User == "alice" })
	_ = a2.c.Close(context.Background())
	f := bob.until("alice presence", func(f frame) bool { return f.Type == "presence" && f.User == "alice" })
	if *f.Online {
		t.Fatalf("presence %+v", f)
	}

	// A node that dies takes its users with it.
	dave := connect(t, h2, "dave")
	dave.join("general")
	bob.until("dave online", func(f frame) bool { return f.Type == "presence" && f.User == "dave" && *f.Online })
	h1.NodeGone("n2")
	gone := map[string]bool{}
	for len(gone) < 2 {
		f := bob.until("offline", func(f frame) bool { return f.Type == "presence" && !*f.Online })
		gone[f.User] = true
	}
	if !gone["dave"] || !gone["carol"] {
		t.Fatalf("offline after NodeGone: %v", gone)
	}
}

func TestDMAllConnections(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	a1, a2 := connect(t, h1, "alice"), connect(t, h2, "alice")
	b1, b2 := connect(t, h1, "bob"), connect(t, h2, "bob")
	eve := connect(t, h1, "eve")

	a1.do(`{"type":"dm","to":"bob","text":"psst","ref":"d1"}`)
	got := map[string]frame{}
	for name, tc := range map[string]*tconn{"a1": a1, "a2": a2, "b1": b1, "b2": b2} {
		f := tc.expect("dm")
		if f.From != "alice" || f.To != "bob" || f.Text != "psst" || f.TS == 0 || f.ID == "" {
			t.Fatalf("%s got %+v", name, f)
		}
		got[name] = f
	}
	if got["a1"].ref() != "d1" || got["a2"].Ref != nil || got["b1"].Ref != nil || got["b2"].Ref != nil {
		t.Fatal("ref must be on the sending connection's copy only")
	}
	for name, f := range got {
		if f.ID != got["a1"].ID {
			t.Fatalf("%s got id %s, the sender's copy %s: a DM has one id", name, f.ID, got["a1"].ID)
		}
	}
	eve.quiet("dm", isType("dm"))

	// A retry with the same ref is not delivered again. The connection
	// that already has its ack gets nothing more; another connection of
	// the sender (after a reconnect) gets the original as its ack.
	a1.do(`{"type":"dm","to":"bob","text":"psst","ref":"d1"}`)
	a1.quiet("second ack", isType("dm"))
	a2.do(`{"type":"dm","to":"bob","text":"psst","ref":"d1"}`)
	if f := a2.expect("dm"); f.ID != got["a1"].ID || f.ref() != "d1" {
		t.Fatalf("retry ack %+v", f)
	}
	b1.quiet("dm", isType("dm"))
	b2.quiet("dm", isType("dm"))

	// Self-DM arrives once on each connection.
	a2.do(`{"type":"dm","to":"alice","text":"note","ref":"n"}`)
	if f := a2.expect("dm"); f.ref() != "n" {
		t.Fatalf("self dm %+v", f)
	}
	if f := a1.expect("dm"); f.Text != "note" {
		t.Fatalf("self dm %+v", f)
	}
	a1.quiet("second copy", isType("dm"))

	// Inbox resume: everything after the first DM, then the latest page.
	b3 := connect(t, h2, "bob")
	b3.do(`{"type":"dms","after":%q}`, got["b1"].ID)
	f := b3.expect("dm_history")
	if !*f.Recovered || len(f.History) != 0 {
		t.Fatalf("dm_history %+v", f)
	}
	b3.do(`{"type":"dms"}`)
	f = b3.expect("dm_history")
	if *f.Recovered || len(f.History) != 1 || f.History[0].ID != got["b1"].ID || f.History[0].Type != "dm" {
		t.Fatalf("dm_history %+v", f)
	}
}

// A DM retried from a new connection on a node where its user had no
// connection (so the original was never delivered there) is acknowledged
// with the original id, is stored once, and its id resumes the sender's
// inbox as well as the recipient's.
func TestDMRetryFromNewConnection(t *testing.T) {
	for _, tt := range retryAnswers {
		t.Run(tt.name, func(t *testing.T) {
			net := inproc.NewNetwork()
			h1, h2 := newHub(t, net, "n1", tt.mod), newHub(t, net, "n2", tt.mod)
			alice, bob := connect(t, h1, "alice"), connect(t, h2, "bob")
			alice.do(`{"type":"dm","to":"bob","text":"psst","ref":"d1"}`)
			ack := alice.expect("dm")
			if got := bob.expect("dm"); got.ID != ack.ID {
				t.Fatalf("bob got id %s, alice's ack %s", got.ID, ack.ID)
			}
			again := connect(t, h2, "alice")
			again.do(`{"type":"dm","to":"bob","text":"psst","ref":"d1"}`)
			if f := again.expect("dm"); f.ID != ack.ID || f.ref() != "d1" {
				t.Fatalf("retry ack %+v, want id %s", f, ack.ID)
			}
			again.quiet("second copy", isType("dm"))
			bob.quiet("second copy", isType("dm"))
			alice.quiet("second copy", isType("dm"))
			for _, tc := range []*tconn{again, bob} {
				tc.do(`{"type":"dms"}`)
				if f := tc.expect("dm_history"); len(f.History) != 1 || f.History[0].ID != ack.ID {
					t.Fatalf("dm_history %+v, want the one DM %s", f, ack.ID)
				}
				tc.do(`{"type":"dms","after":%q}`, ack.ID)
				if f := tc.expect("dm_history"); !*f.Recovered || len(f.History) != 0 {
					t.Fatalf("dm_history after %s: %+v, want recovered and empty", ack.ID, f)
				}
			}
		})
	}
}

// echoData is a broker that, like the Redis one, returns the caller's
// data from a Publish that hit an earlier IdempotencyKey.
type echoData struct{ *inproc.Broker }

// retryAnswers are the two ways a broker answers a Publish that hit an
// earlier IdempotencyKey: with the original's data, or with the caller's.
var retryAnswers = []struct {
	name string
	mod  func(*Config)
}{
	{"original data", nil},
	{"caller's data", func(c *Config) { c.Broker = echoData{c.Broker.(*inproc.Broker)} }},
}

func (b echoData) Publish(ctx context.Context, ch string, data []byte, o transport.PublishOptions) (transport.Publication, error) {
	p, err := b.Broker.Publish(ctx, ch, data, o)
	p.Data = data
	return p, err
}

func TestSendRetryIsIdempotent(t *testing.T) {
	for _, tt := range retryAnswers {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, nil, "n1", tt.mod)
			alice, bob := connect(t, h, "alice"), connect(t, h, "bob")
			alice.join("general")
			bob.join("general")
			alice.do(`{"type":"send","room":"general","text":"once","ref":"r1"}`)
			first := alice.until("message", isType("message"))
			if first.ref() != "r1" {
				t.Fatalf("ack %+v", first)
			}
			bob.expect("message")
			// The same connection retries: its ack is already out.
			alice.do(`{"type":"send","room":"general","text":"once","ref":"r1"}`)
			alice.quiet("second ack", isType("message"))
			// A new connection (after a reconnect) retries the same ref.
			again := connect(t, h, "alice")
			again.join("general")
			again.do(`{"type":"send","room":"general","text":"once","ref":"r1"}`)
			ack := again.until("ack", isType("message"))
			if ack.ID != first.ID || ack.ref() != "r1" || ack.Text != "once" {
				t.Fatalf("ack %+v, want id %s", ack, first.ID)
			}
			bob.quiet("duplicate", isType("message"))
			alice.quiet("duplicate", isType("message"))
		})
	}
}

// A ref reused for different text is not a retry: both messages are kept.
func TestReusedRefKeepsNewText(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	alice, bob := connect(t, h, "alice"), connect(t, h, "bob")
	alice.join("general")
	bob.join("general")
	alice.do(`{"type":"send","room":"general","text":"one","ref":"k"}`)
	alice.do(`{"type":"send","room":"general","text":"two","ref":"k"}`)
	a := bob.expect("message")
	b := bob.expect("message")
	if a.Text != "one" || b.Text != "two" || a.ID == b.ID {
		t.Fatalf("got %+v then %+v, want two distinct messages", a, b)
	}
}

func TestRateLimit(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit = 0.001; c.RateBurst = 3 })
	c := connect(t, h, "alice")
	for i := range 5 {
		c.do(`{"type":"ping","ref":"p%d"}`, i)
	}
	for i := range 5 {
		f := c.next()
		switch {
		case i < 3 && f.Type != "pong":
			t.Fatalf("frame %d: %+v, want pong", i, f)
		case i >= 3 && (f.Type != "error" || f.Code != CodeRateLimited || f.ref() != fmt.Sprintf("p%d", i)):
			t.Fatalf("frame %d: %+v, want rate_limited", i, f)
		}
	}
	u := newHub(t, nil, "n2", func(c *Config) { c.RateLimit = NoRateLimit })
	c = connect(t, u, "alice")
	for range 500 {
		c.do(`{"type":"ping"}`)
	}
	for range 500 {
		c.expect("pong")
	}
}

func TestTyping(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHub(t, nil, "n1", func(c *Config) { c.Now = clock })
	alice, alice2, bob := connect(t, h, "alice"), connect(t, h, "alice"), connect(t, h, "bob")
	alice.join("general")
	alice2.join("general")
	bob.join("general")
	alice.do(`{"type":"typing","room":"general"}`)
	if f := bob.until("typing", isType("typing")); f.User != "alice" || f.Room != "general" {
		t.Fatalf("typing %+v", f)
	}
	alice.quiet("own typing", isType("typing"))
	alice2.quiet("own typing", isType("typing"))
	alice.do(`{"type":"typing","room":"general"}`) // throttled
	bob.quiet("throttled typing", isType("typing"))
	mu.Lock()
	now = now.Add(typingInterval)
	mu.Unlock()
	alice.do(`{"type":"typing","room":"general"}`)
	bob.until("typing", isType("typing"))
}

func TestShutdown(t *testing.T) {
	b, err := inproc.New(inproc.Config{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	h, err := New(Config{Node: "n1", Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	c := connect(t, h, "alice")
	c.join("general")
	ctx := context.Background()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.disconnected("shutdown")
	if code, _ := c.c.CloseReason(); code != CloseServiceRestart {
		t.Fatalf("close code %d", code)
	}
	if _, err := h.Connect(ctx, "bob", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Connect after shutdown: %v", err)
	}
	if p, _ := b.Presence(ctx, "r:general"); len(p) != 0 {
		t.Fatalf("presence left behind: %v", p)
	}
	if h.Clients() != 0 {
		t.Fatalf("%d clients left", h.Clients())
	}
}

// revokedSessions is a Revocations that knows the sessions it is told
// are revoked and keeps the publications the hub hands it. (The real
// record, store.Revocations, is tested in package store; chat may not
// import it.)
type revokedSessions struct {
	mu      sync.Mutex
	ids     map[string]bool
	handled []string // channels of the publications handed over
}

func (r *revokedSessions) revoke(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	r.ids[id] = true
}

func (r *revokedSessions) Revoked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *revokedSessions) HandlePublication(channel string, _ transport.Publication) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled = append(r.handled, channel)
}

func TestDisconnectSession(t *testing.T) {
	rs := &revokedSessions{}
	h := newHub(t, nil, "n1", func(c *Config) { c.Revocations = rs; c.System = rs })
	c := connectSession(t, h, "alice", "sess1")
	other := connectSession(t, h, "alice", "sess2")
	rs.revoke("sess1")
	h.DisconnectSession("sess1")
	if code, _ := c.c.CloseReason(); code != CloseLoggedOut {
		t.Fatalf("close code %d", code)
	}
	if other.c.isClosed() {
		t.Fatal("other session affected")
	}
	// A connection whose session was revoked while it was being opened
	// (after the web layer checked it) is closed at once.
	late, err := h.Connect(context.Background(), "alice", "sess1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = late.Close(context.Background()) })
	if code, _ := late.CloseReason(); code != CloseLoggedOut {
		t.Fatalf("connection of a revoked session: close code %d", code)
	}
	// The system channels are handed over, rooms and inboxes are not.
	h.HandlePublication("s:revoked", transport.Publication{Offset: 1, Data: []byte(`{"k":"s"}`)})
	h.HandlePublication(roomPrefix+"general", transport.Publication{Offset: 1, Data: []byte(`{"k":"m"}`)})
	rs.mu.Lock()
	handled := slices.Clone(rs.handled)
	rs.mu.Unlock()
	if !slices.Equal(handled, []string{"s:revoked"}) {
		t.Fatalf("handed to the system tables: %q", handled)
	}
}

// A ban closes every connection of the user, whatever its session, with
// CloseBanned, and no one else's.
func TestCloseUser(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	a1 := connectSession(t, h, "alice", "s1")
	a2 := connectSession(t, h, "alice", "s2")
	b := connectSession(t, h, "bob", "s3")
	h.CloseUser("alice", CloseBanned, "banned")
	for _, c := range []*tconn{a1, a2} {
		if code, reason := c.c.CloseReason(); code != CloseBanned || reason != "banned" {
			t.Fatalf("alice's connection: close %d %q, want %d banned", code, reason, CloseBanned)
		}
	}
	if b.c.isClosed() {
		t.Fatal("bob disconnected by alice's ban")
	}
}

// Frames the web layer rejects (too large, binary) count against the
// rate limit like any other.
func TestRejectIsRateLimited(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit = 0.001; c.RateBurst = 2 })
	tc := connect(t, h, "alice")
	for range 3 {
		if err := tc.c.Reject(CodeTooLarge, "too large"); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{CodeTooLarge, CodeTooLarge, CodeRateLimited} {
		if f := tc.expect("error"); f.Code != want {
			t.Fatalf("got %+v, want code %s", f, want)
		}
	}
	tc.do(`{"type":"ping"}`)
	if f := tc.expect("error"); f.Code != CodeRateLimited {
		t.Fatalf("got %+v, want rate_limited", f)
	}
}

// flakyInbox refuses the first subscriptions to DM inboxes as a broker
// does while the inbox's node has just died.
type flakyInbox struct {
	*inproc.Broker
	refusals atomic.Int32
}

func (b *flakyInbox) Subscribe(ctx context.Context, ch string) error {
	if strings.HasPrefix(ch, inboxPrefix) && b.refusals.Add(-1) >= 0 {
		return fmt.Errorf("inbox owner gone: %w", transport.ErrUnavailable)
	}
	return b.Broker.Subscribe(ctx, ch)
}

func TestConnectWaitsForInbox(t *testing.T) {
	var fb *flakyInbox
	h := newHub(t, nil, "n1", func(c *Config) {
		fb = &flakyInbox{Broker: c.Broker.(*inproc.Broker)}
		fb.refusals.Store(3)
		c.Broker = fb
	})
	alice := connect(t, h, "alice")
	bob := connect(t, h, "bob")
	if n := fb.refusals.Load(); n >= 0 {
		t.Fatalf("inbox subscribe refused only %d times, want 3", 3-n)
	}
	bob.do(`{"type":"dm","to":"alice","text":"hi"}`)
	if f := alice.expect("dm"); f.Text != "hi" {
		t.Fatalf("dm %+v", f)
	}
}
