package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport/inproc"
	"github.com/meshchat/meshchat/web/webtest"
)

// events opens an events stream as s, with the test sockets' small
// receive buffer.
func (e *env) events(s webtest.Session, o webtest.EventsOptions) *webtest.Conn {
	e.t.Helper()
	o.Dial.ReadBuffer = wsReadBuffer
	return webtest.Events(e.t, e.ts.URL, s, o)
}

func isMessage(text string) func(webtest.Frame) bool {
	return func(f webtest.Frame) bool { return f.Str("text") == text }
}

// TestEventsStream: the stream carries the frames a WebSocket would get
// (welcome, joined, dm_history, presence, message, typing, dm), and the
// events that move a position carry the resume point as their id.
func TestEventsStream(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := webtest.Login(t, e.ts.URL, "alice")
	s := e.events(alice, webtest.EventsOptions{Rooms: []string{"general", "random", "general"}})
	if s.Welcome.EventID() != "" {
		t.Errorf("welcome has an event id: %v", s.Welcome)
	}
	for _, room := range []string{"general", "random"} {
		if j := s.ExpectNext("joined", waitFor); j.Str("room") != room || !j.Has("members", "alice") {
			t.Fatalf("joined: %v", j)
		}
	}
	s.ExpectNext("dm_history", waitFor)

	bob := e.connect("bob", nil)
	bob.Join("general")
	if p := s.ExpectNext("presence", waitFor); p.Str("user") != "bob" || p.EventID() != "" {
		t.Fatalf("presence: %v", p)
	}
	bob.Send(sendText("hello"))
	m := s.ExpectNext("message", waitFor)
	if m.Str("from") != "bob" || m.Str("text") != "hello" || m.EventID() != "general:"+m.Str("id") {
		t.Fatalf("message %v, event id %q", m, m.EventID())
	}
	bob.Send(`{"type":"typing","room":"general"}`)
	if f := s.ExpectNext("typing", waitFor); f.Str("user") != "bob" {
		t.Fatalf("typing: %v", f)
	}
	bob.Send(`{"type":"dm","to":"alice","text":"psst"}`)
	d := s.ExpectNext("dm", waitFor)
	if want := "general:" + m.Str("id") + ",@:" + d.Str("id"); d.EventID() != want {
		t.Fatalf("dm event id %q, want %q", d.EventID(), want)
	}

	// A malformed resume point is no error: the stream starts afresh.
	s2 := e.events(alice, webtest.EventsOptions{Rooms: []string{"general"}, LastEventID: "general:bogus,nonsense,@"})
	if j := s2.ExpectNext("joined", waitFor); j["recovered"] != false || len(j.Frames("history")) != 1 {
		t.Fatalf("joined after a bogus id: %v", j)
	}
}

func TestEventsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := webtest.Login(t, e.ts.URL, "alice")
	for _, tc := range []struct {
		name   string
		s      webtest.Session
		o      webtest.EventsOptions
		status int
		code   string
	}{
		{"no session", webtest.Session{}, webtest.EventsOptions{}, 401, CodeUnauthorized},
		{"bad room", alice, webtest.EventsOptions{Rooms: []string{"a b"}}, 400, chat.CodeBadRoom},
		{"foreign origin", alice, webtest.EventsOptions{Dial: webtest.DialOptions{Origin: "http://evil.example"}}, 403, CodeForbiddenOrigin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := webtest.TryEvents(t, e.ts.URL, tc.s, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var ae apiError
			_ = json.NewDecoder(resp.Body).Decode(&ae)
			if resp.StatusCode != tc.status || ae.Error.Code != tc.code {
				t.Fatalf("%d %+v, want %d %s", resp.StatusCode, ae, tc.status, tc.code)
			}
		})
	}
	// The login's token works where cookies are not sent.
	s := e.events(webtest.Session{User: "alice", Token: alice.Token}, webtest.EventsOptions{Token: true})
	s.ExpectNext("dm_history", waitFor)
}

// TestEventsResume: a stream resumed with the id of the last event it
// read (header or query) gets every room message and DM after it, once.
func TestEventsResume(t *testing.T) {
	for _, inQuery := range []bool{false, true} {
		t.Run(fmt.Sprintf("query=%v", inQuery), func(t *testing.T) {
			e := newEnv(t, envOpts{})
			alice := webtest.Login(t, e.ts.URL, "alice")
			rooms := []string{"general", "random"}
			s := e.events(alice, webtest.EventsOptions{Rooms: rooms})
			bob := e.connect("bob", nil)
			bob.Join("general")
			bob.Join("random")
			say := func(n int) {
				for i := range n {
					text := fmt.Sprintf("m%d", i)
					bob.Send(sendText(text))
					bob.Expect("message", waitFor, isMessage(text))
					bob.Send(fmt.Sprintf(`{"type":"send","room":"random","text":"r-%s"}`, text))
					bob.Expect("message", waitFor, isMessage("r-"+text))
					bob.Send(fmt.Sprintf(`{"type":"dm","to":"alice","text":"d-%s"}`, text))
					bob.Expect("dm", waitFor, isMessage("d-"+text))
				}
			}
			say(3)
			// The rooms and the inbox are separate channels: their events
			// interleave in any order, and the stream joins its rooms in
			// the background (a room's first messages may come in its
			// joined history). Resume from the id of the event that
			// completed all three.
			want := map[string]bool{"m2": true, "r-m2": true, "d-m2": true}
			var last string
			for len(want) > 0 {
				f := s.ExpectAny(waitFor, func(webtest.Frame) bool { return true })
				if id := f.EventID(); id != "" {
					last = id
				}
				delete(want, f.Str("text"))
				for _, h := range f.Frames("history") {
					delete(want, h.Str("text"))
				}
			}
			s.Close()

			say(4) // m0..m3 again, all after the resume point
			r := e.events(alice, webtest.EventsOptions{Rooms: rooms, LastEventID: last, InQuery: inQuery})
			for _, room := range rooms {
				j := r.Expect("joined", waitFor, func(f webtest.Frame) bool { return f.Str("room") == room })
				if j["recovered"] != true || len(j.Frames("history")) != 4 {
					t.Fatalf("%s: %v", room, j)
				}
			}
			h := r.Expect("dm_history", waitFor, nil)
			if h["recovered"] != true || len(h.Frames("history")) != 4 {
				t.Fatalf("dm_history: %v", h)
			}
			// Nothing twice: what comes next is new.
			bob.Send(sendText("next"))
			if f := r.ExpectNext("message", waitFor); f.Str("text") != "next" {
				t.Fatalf("after the resume: %v", f)
			}
		})
	}
}

// TestEventsPosts: the one-shot requests, and their errors, as JSON.
func TestEventsPosts(t *testing.T) {
	e := newEnv(t, envOpts{
		hub: func(c *chat.Config) { c.RateLimit, c.RateBurst = 0.001, 8 },
		web: func(c *Config) { c.MaxFrameBytes = 1024 },
	})
	base := e.ts.URL
	alice := webtest.Login(t, base, "alice")
	bob := webtest.Login(t, base, "bob")
	s := e.events(bob, webtest.EventsOptions{Rooms: []string{"general"}})
	s.ExpectNext("joined", waitFor)
	s.ExpectNext("dm_history", waitFor)

	st, ack := alice.Post(t, base, "/api/send", map[string]string{"room": "general", "text": "hi", "ref": "r1"})
	if st != 200 || ack.Type() != "message" || ack.Str("id") == "" || ack.Str("ref") != "r1" || ack.Str("from") != "alice" {
		t.Fatalf("send: %d %v", st, ack)
	}
	if m := s.Expect("message", waitFor, nil); m.Str("id") != ack.Str("id") || m["ref"] != nil {
		t.Fatalf("delivered %v, want id %s", m, ack.Str("id"))
	}
	// A retry with the same ref: the original, not a second message.
	if st, again := alice.Post(t, base, "/api/send", map[string]string{"room": "general", "text": "hi", "ref": "r1"}); st != 200 || again.Str("id") != ack.Str("id") {
		t.Fatalf("retry: %d %v, want id %s", st, again, ack.Str("id"))
	}
	if st, d := alice.Post(t, base, "/api/dm", map[string]string{"to": "bob", "text": "psst", "ref": "d1"}); st != 200 || d.Type() != "dm" || d.Str("ref") != "d1" {
		t.Fatalf("dm: %d %v", st, d)
	}
	// The retry was not delivered: the DM comes next.
	if f := s.ExpectNext("dm", waitFor); f.Str("text") != "psst" {
		t.Fatalf("after the retry: %v", f)
	}
	if st, _ := alice.Post(t, base, "/api/typing", map[string]string{"room": "general"}); st != 204 {
		t.Fatalf("typing: %d", st)
	}
	s.Expect("typing", waitFor, nil)

	for _, tc := range []struct {
		name   string
		s      webtest.Session
		path   string
		body   any
		status int
		code   string
	}{
		{"no session", webtest.Session{}, "/api/send", map[string]string{"room": "general", "text": "x"}, 401, CodeUnauthorized},
		{"bad room", alice, "/api/send", map[string]string{"room": "a b", "text": "x"}, 400, chat.CodeBadRoom},
		{"empty text", alice, "/api/send", map[string]string{"room": "general", "text": " "}, 400, chat.CodeBadText},
		{"bad recipient", alice, "/api/dm", map[string]string{"to": "", "text": "x"}, 400, chat.CodeBadName},
		{"long ref", alice, "/api/dm", map[string]string{"to": "bob", "text": "x", "ref": strings.Repeat("r", 65)}, 400, chat.CodeBadRef},
		{"wrong type", alice, "/api/send", map[string]any{"room": 5, "text": "x"}, 400, chat.CodeBadFrame},
		{"not an object", alice, "/api/send", "hello", 400, chat.CodeBadFrame},
		{"too large", alice, "/api/send", map[string]string{"room": "general", "text": strings.Repeat("x", 2000)}, 413, CodeTooLarge},
		// The burst of 8 is spent by now: 4 requests above, 4 that got
		// to the hub here (the body's own faults do not).
		{"rate limited", alice, "/api/send", map[string]string{"room": "general", "text": "x"}, 429, chat.CodeRateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, f := tc.s.Post(t, base, tc.path, tc.body)
			if st != tc.status || f.ErrorCode() != tc.code {
				t.Fatalf("%d %v, want %d %s", st, f, tc.status, tc.code)
			}
		})
	}

	// The same origin rule as the other POSTs.
	var ae apiError
	c := newClient(t)
	c.Jar.SetCookies(mustURL(base), alice.Cookies)
	if resp := e.do(c, "POST", "/api/send", `{"room":"general","text":"x"}`, hdr("Origin", "http://evil.example"), &ae); resp.StatusCode != 403 || ae.Error.Code != CodeForbiddenOrigin {
		t.Fatalf("foreign origin: %d %+v", resp.StatusCode, ae)
	}
	if resp := e.do(c, "GET", "/api/send", "", nil, &ae); resp.StatusCode != 405 {
		t.Fatalf("GET /api/send: %d", resp.StatusCode)
	}
}

// TestEventsSlowReader: a stream whose reader stops is cut off like a
// slow WebSocket, and resumes from its last event id with nothing lost.
// The backlog that cut it comes in a room of its own, which the resumed
// stream leaves: resumed, it would come as one joined frame larger than
// the queue. The queue holds what the room with small messages gets
// before the node lets go of the reader (the sender goes on until then).
func TestEventsSlowReader(t *testing.T) {
	e := newEnv(t, envOpts{hub: func(c *chat.Config) {
		c.QueueBytes = 256 << 10
		c.RateLimit = chat.NoRateLimit
		// Socket buffers can hold thousands of messages before the
		// queue fills: the resume point must still be retained.
		b, err := inproc.New(inproc.Config{Node: c.Node, HistorySize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		clustertest.Cleanup(t, "broker close", b.Close)
		c.Broker = b
	}})
	slowUser := webtest.Login(t, e.ts.URL, "slow")
	slow := e.events(slowUser, webtest.EventsOptions{Rooms: []string{"general", "flood"}})
	slow.ExpectNext("joined", waitFor)
	slow.ExpectNext("joined", waitFor)
	slow.Pause()
	fast := e.connect("fast", nil)
	fast.Join("general")
	fast.Join("flood")
	big := strings.Repeat("x", 3000)
	var sent []string
	for i := 0; len(e.hub.SlowConsumers()) == 0; i++ {
		if i == 10000 {
			t.Fatal("slow reader never cut off")
		}
		ref := fmt.Sprintf("r%d", i)
		fast.Send(map[string]string{"type": "send", "room": "general", "text": ref, "ref": ref})
		sent = append(sent, fast.Expect("message", waitFor, func(f webtest.Frame) bool { return f.Str("ref") == ref }).Str("id"))
		fast.Send(map[string]string{"type": "send", "room": "flood", "text": big, "ref": "f" + ref})
		fast.Expect("message", waitFor, func(f webtest.Frame) bool { return f.Str("ref") == "f"+ref })
	}
	// What reached the reader before the cut: the close event when the
	// socket had room for it, else the stream just ends.
	slow.Resume()
	var got []string
	last := ""
	// The node ends the stream once its blocked write of the cut
	// stream's last bytes returns: on a loaded machine, well after the
	// reader drained the socket.
	const endWait = 4 * waitFor
	for {
		f, ok := slow.TryNext(endWait)
		if !ok {
			if slow.Err() == nil {
				t.Fatalf("the cut stream still open after %v", endWait)
			}
			break
		}
		if f.EventID() != "" {
			last = f.EventID()
		}
		if f.Type() == "message" && f.Str("room") == "general" {
			got = append(got, f.Str("id"))
		}
		if f.Type() == "close" && f.Int("code") != chat.CloseSlowConsumer {
			t.Fatalf("close event %v", f)
		}
	}
	r := e.events(slowUser, webtest.EventsOptions{Rooms: []string{"general"}, LastEventID: last})
	j := r.ExpectNext("joined", waitFor)
	if j["recovered"] != true {
		t.Fatalf("resume after the cut: %v", j)
	}
	for _, m := range j.Frames("history") {
		got = append(got, m.Str("id"))
	}
	// What did not fit in the joined frame's history follows it.
	for len(got) < len(sent) {
		got = append(got, r.ExpectNext("message", waitFor).Str("id"))
	}
	if strings.Join(got, ",") != strings.Join(sent, ",") {
		t.Fatalf("the slow reader got %d messages (%v), want the %d sent (%v)", len(got), got, len(sent), sent)
	}
}

// An events stream cut off as a slow consumer is reset, as a WebSocket
// is (TestSlowConsumerReset): its reader learns at once, without first
// reading the backlog the node's socket held for it.
func TestEventsSlowReaderReset(t *testing.T) {
	e, fast := floodEnv(t, 256<<10)
	slow := e.events(webtest.Login(t, e.ts.URL, "slow"), webtest.EventsOptions{Rooms: []string{"general"}})
	slow.ExpectNext("joined", waitFor)
	slow.Pause()
	text := strings.Repeat("x", 3000)
	floodUntilCut(t, e, fast, text)
	checkReset(t, e, slow, len(text))
}

// TestEventsClose: a stream ends with a close event that carries the
// WebSocket close code of the cause: logout, shutdown.
func TestEventsClose(t *testing.T) {
	e := newEnv(t, envOpts{})
	c, _ := e.login("alice")
	alice := e.session("alice", c)
	s := e.events(alice, webtest.EventsOptions{})
	e.do(c, "POST", "/api/logout", "", nil, nil)
	if code := s.Closed(waitFor); code != chat.CloseLoggedOut {
		t.Fatalf("after logout: close code %d", code)
	}

	bob := webtest.Login(t, e.ts.URL, "bob")
	s = e.events(bob, webtest.EventsOptions{Rooms: []string{"general"}})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()
	if code := s.Closed(waitFor); code != chat.CloseServiceRestart {
		t.Fatalf("on shutdown: close code %d", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	resp, err := webtest.TryEvents(t, e.ts.URL, bob, webtest.EventsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a stream after shutdown: %d", resp.StatusCode)
	}
}
