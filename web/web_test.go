package web

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/gorilla/websocket"
	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
	"github.com/meshchat/meshchat/web/webtest"
)

type apiError struct {
	Error struct{ Code, Message string }
}

func TestLoginMeLogout(t *testing.T) {
	e := newEnv(t, envOpts{})
	c, token := e.login("alice")
	ck := cookieFor(t, c, e.ts.URL)
	if ck == nil {
		t.Fatal("no session cookie")
	}
	resp := e.do(newClient(t), "POST", "/api/login", `{"name":"alice"}`, nil, nil)
	raw := resp.Header.Get("Set-Cookie")
	if !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Lax") || strings.Contains(raw, "Secure") {
		t.Fatalf("cookie flags: %s", raw)
	}
	resp = e.do(newClient(t), "POST", "/api/login", `{"name":"alice"}`, hdr("X-Forwarded-Proto", "https"), nil)
	if !strings.Contains(resp.Header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("no Secure behind TLS proxy: %s", resp.Header.Get("Set-Cookie"))
	}

	var me struct{ User, Node string }
	if resp := e.do(c, "GET", "/api/me", "", nil, &me); resp.StatusCode != 200 || me.User != "alice" || me.Node != "n1" {
		t.Fatalf("me: %d %+v", resp.StatusCode, me)
	}
	// The token works without the cookie.
	if resp := e.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+token), &me); resp.StatusCode != 200 {
		t.Fatalf("me with token: %d", resp.StatusCode)
	}
	// Form login works too.
	var a loginAnswer
	if resp := e.do(newClient(t), "POST", "/api/login", "name=bob", hdr("Content-Type", "application/x-www-form-urlencoded"), &a); resp.StatusCode != 200 || a.User != "bob" {
		t.Fatalf("form login: %d %+v", resp.StatusCode, a)
	}

	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	var ae apiError
	if resp := e.do(c, "GET", "/api/me", "", nil, &ae); resp.StatusCode != 401 || ae.Error.Code != CodeUnauthorized {
		t.Fatalf("me after logout: %d %+v", resp.StatusCode, ae)
	}
	// The old cookie, replayed, is dead; so is the token.
	replay := newClient(t)
	replay.Jar.SetCookies(mustURL(e.ts.URL), []*http.Cookie{{Name: ck.Name, Value: ck.Value}})
	if resp := e.do(replay, "GET", "/api/me", "", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("replayed cookie: %d", resp.StatusCode)
	}
	if resp := e.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+token), nil); resp.StatusCode != 401 {
		t.Fatalf("token after logout: %d", resp.StatusCode)
	}
	if _, resp, err := e.dial(replay, "", nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("ws with replayed cookie: %v", resp)
	}
	// Logout without a session is still 204.
	if resp := e.do(newClient(t), "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("anonymous logout: %d", resp.StatusCode)
	}
}

// TestHintCookie: login sets a page-readable hint with the session
// cookie's scope and lifetime; logout clears both.
func TestHintCookie(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := newClient(t)
	resp := e.do(c, "POST", "/api/login", `{"name":"alice"}`, nil, nil)
	var session, hint *http.Cookie
	for _, ck := range resp.Cookies() {
		switch ck.Name {
		case CookieName:
			session = ck
		case HintCookieName:
			hint = ck
		}
	}
	if session == nil || hint == nil {
		t.Fatalf("login cookies: %v", resp.Header.Values("Set-Cookie"))
	}
	if hint.Value != "1" || hint.HttpOnly || hint.Path != session.Path || hint.Domain != session.Domain ||
		hint.MaxAge != session.MaxAge || hint.MaxAge <= 0 || hint.SameSite != http.SameSiteLaxMode {
		t.Errorf("hint %+v does not match session %+v", hint, session)
	}
	if ck := cookieNamed(c, e.ts.URL, HintCookieName); ck == nil {
		t.Fatal("the browser keeps no hint")
	}
	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if ck := cookieNamed(c, e.ts.URL, HintCookieName); ck != nil {
		t.Errorf("hint kept after logout: %+v", ck)
	}
	if ck := cookieNamed(c, e.ts.URL, CookieName); ck != nil {
		t.Errorf("session cookie kept after logout: %+v", ck)
	}
}

// TestHintCookieDomain: with a shared cookie domain the hint goes where
// the session cookie goes, and logout clears it there too.
func TestHintCookieDomain(t *testing.T) {
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.Sessions = store.NewCookieStore([]byte(strings.Repeat("h", 32)), []byte(strings.Repeat("b", 32)),
			store.SessionOptions{Domain: "chat.example.test"})
	}})
	named := func(resp *http.Response) map[string]*http.Cookie {
		m := map[string]*http.Cookie{}
		for _, ck := range resp.Cookies() {
			m[ck.Name] = ck
		}
		return m
	}
	in := named(e.do(newClient(t), "POST", "/api/login", `{"name":"alice"}`, nil, nil))
	if in[CookieName] == nil || in[HintCookieName] == nil || in[CookieName].Domain != "chat.example.test" ||
		in[HintCookieName].Domain != in[CookieName].Domain {
		t.Fatalf("login cookies: session %+v, hint %+v", in[CookieName], in[HintCookieName])
	}
	out := named(e.do(newClient(t), "POST", "/api/logout", "", nil, nil))
	if h := out[HintCookieName]; h == nil || h.Domain != "chat.example.test" || h.MaxAge >= 0 {
		t.Fatalf("logout does not clear the hint on the shared domain: %+v", h)
	}
}

// cookieNamed is the cookie the client's jar would send to base, or nil.
func cookieNamed(c *http.Client, base, name string) *http.Cookie {
	for _, ck := range c.Jar.Cookies(mustURL(base)) {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

func TestLoginRenewsSession(t *testing.T) {
	e := newEnv(t, envOpts{})
	c, _ := e.login("alice")
	old := cookieFor(t, c, e.ts.URL)
	var a loginAnswer
	e.do(c, "POST", "/api/login", `{"name":"bob"}`, nil, &a)
	now := cookieFor(t, c, e.ts.URL)
	if old.Value == now.Value {
		t.Fatal("session not renewed")
	}
	replay := newClient(t)
	replay.Jar.SetCookies(mustURL(e.ts.URL), []*http.Cookie{{Name: old.Name, Value: old.Value}})
	if resp := e.do(replay, "GET", "/api/me", "", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("replaced session still valid: %d", resp.StatusCode)
	}
}

func TestSessionOnEveryNode(t *testing.T) {
	net := inproc.NewNetwork()
	e1 := newEnv(t, envOpts{net: net, node: "n1"})
	e2 := newEnv(t, envOpts{net: net, node: "n2"})
	c, _ := e1.login("alice")
	ck := cookieFor(t, c, e1.ts.URL)
	other := newClient(t)
	other.Jar.SetCookies(mustURL(e2.ts.URL), []*http.Cookie{{Name: ck.Name, Value: ck.Value}})
	var me struct{ User, Node string }
	if resp := e2.do(other, "GET", "/api/me", "", nil, &me); resp.StatusCode != 200 || me.User != "alice" || me.Node != "n2" {
		t.Fatalf("n2 me: %d %+v", resp.StatusCode, me)
	}
	w := e2.connect("alice", other)
	// Wait until n2 receives revocations, then log out on n1.
	e1.do(c, "POST", "/api/logout", "", nil, nil)
	clustertest.WaitFor(t, waitFor, "the session to end on n2 after logout on n1", func() bool {
		return e2.do(other, "GET", "/api/me", "", nil, nil).StatusCode == 401
	})
	// The session's socket on n2 is closed too.
	if code := w.Closed(waitFor); code != chat.CloseLoggedOut {
		t.Fatalf("socket on n2: close code %d", code)
	}
}

func TestLoginBadName(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, body := range []string{
		`{"name":""}`, `{"name":"a b"}`, `{"name":"` + strings.Repeat("x", 33) + `"}`, `{"name":"ä"}`,
		`{}`, `{"name":"<script>"}`, `{"name":"a/b"}`, `name=`, `name=a%20b`,
	} {
		var ae apiError
		resp := e.do(newClient(t), "POST", "/api/login", body, nil, &ae)
		if resp.StatusCode != 400 || ae.Error.Code != CodeBadName || ae.Error.Message == "" {
			t.Errorf("%s: %d %+v", body, resp.StatusCode, ae)
		}
	}
	var ae apiError
	if resp := e.do(newClient(t), "POST", "/api/login", `{"name":`, nil, &ae); resp.StatusCode != 400 {
		t.Errorf("malformed: %d %+v", resp.StatusCode, ae)
	}
}

func TestOriginRules(t *testing.T) {
	members := MembershipFunc(func() []Member {
		return []Member{
			{Name: "n1", HTTP: "http://127.0.0.1:1", State: "alive"},
			{Name: "n2", HTTP: "https://node2.example:8443", State: "alive"},
		}
	})
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.AllowedOrigins = []string{"https://Chat.Example.com"}
		c.Members = members
	}})
	c, _ := e.login("alice")
	self := e.ts.URL
	tests := []struct {
		name   string
		origin string
		extra  []string
		ok     bool
	}{
		{"no origin", "", nil, true},
		{"same host", self, nil, true},
		{"configured", "https://chat.example.com", nil, true},
		{"configured default port", "https://chat.example.com:443", nil, true},
		{"member", "https://node2.example:8443", nil, true},
		{"forwarded host", "https://front.example", []string{"X-Forwarded-Host", "front.example"}, true},
		{"evil", "https://evil.example", nil, false},
		{"scheme differs from configured", "http://chat.example.com", nil, false},
		{"null", "null", nil, false},
		{"member other port", "https://node2.example:9999", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hdr(tt.extra...)
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			conn, resp, err := e.dial(c, "", h)
			if tt.ok {
				if err != nil {
					t.Fatalf("ws refused: %v %v", err, resp)
				}
				conn.Close()
			} else if err == nil || resp.StatusCode != 403 {
				t.Fatalf("ws: want 403, got %v %v", err, resp)
			}
			var ae apiError
			resp = e.do(newClient(t), "POST", "/api/login", `{"name":"x"}`, h, &ae)
			if tt.ok != (resp.StatusCode == 200) || (!tt.ok && (resp.StatusCode != 403 || ae.Error.Code != CodeForbiddenOrigin)) {
				t.Fatalf("login: %d %+v", resp.StatusCode, ae)
			}
		})
	}
}

func TestWSAuth(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, resp, err := e.dial(newClient(t), "", nil)
	if err == nil || resp.StatusCode != 401 {
		t.Fatalf("no session: %v %v", err, resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("401 content type %q", ct)
	}
	if _, resp, _ = e.dial(nil, "token=garbage.x", nil); resp == nil || resp.StatusCode != 401 {
		t.Fatalf("bad token: %v", resp)
	}
	_, token := e.login("alice")
	w := webtest.Dial(t, e.ts.URL, e.session("alice", nil), webtest.DialOptions{Query: "token=" + token, ReadBuffer: wsReadBuffer})
	if f := w.Welcome; f.Str("node") != "n1" || f["nodes"] == nil {
		t.Fatalf("welcome %v", f)
	}
	// A token signed with another key is refused.
	other := newEnv(t, envOpts{web: func(c *Config) { c.TokenKey = []byte("other") }})
	if _, resp, _ := other.dial(nil, "token="+token, nil); resp == nil || resp.StatusCode != 401 {
		t.Fatalf("foreign token: %v", resp)
	}
}

func TestTwoUsersChat(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice, bob := e.connect("alice", nil), e.connect("bob", nil)
	alice.Join("general")
	if j := bob.Join("general"); !slices.Equal(j.Members(), []string{"alice", "bob"}) || j["recovered"] == nil {
		t.Fatalf("joined %v", j)
	}
	alice.Expect("presence", waitFor, func(f webtest.Frame) bool { return f.Str("user") == "bob" && f["online"] == true })
	alice.Send(`{"type":"send","room":"general","text":"hello","ref":"c1"}`)
	a, b := alice.ExpectNext("message", waitFor), bob.ExpectNext("message", waitFor)
	if a.Str("ref") != "c1" || b["ref"] != nil || a.Str("id") != b.Str("id") || b.Str("text") != "hello" || b.Str("from") != "alice" {
		t.Fatalf("messages %v %v", a, b)
	}
	bob.Send(`{"type":"typing","room":"general"}`)
	if f := alice.ExpectNext("typing", waitFor); f.Str("user") != "bob" {
		t.Fatalf("typing %v", f)
	}
	bob.Send(`{"type":"nonsense","ref":"z"}`)
	if f := bob.ExpectNext("error", waitFor); f.Str("code") != chat.CodeUnknownType || f.Str("ref") != "z" {
		t.Fatalf("error %v", f)
	}
	bob.Close()
	if f := alice.ExpectNext("presence", waitFor); f.Str("user") != "bob" || f["online"] != false {
		t.Fatalf("presence %v", f)
	}
}

func TestResume(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := e.connect("alice", nil)
	alice.Join("general")
	var ids []string
	for i := range 5 {
		alice.Send(fmt.Sprintf(`{"type":"send","room":"general","text":"m%d"}`, i))
		ids = append(ids, alice.ExpectNext("message", waitFor).Str("id"))
	}
	bob := e.connect("bob", nil)
	j := bob.JoinAfter("general", ids[1])
	h := j.Frames("history")
	if j["recovered"] != true || len(h) != 3 || h[0].Str("id") != ids[2] || h[2].Str("id") != ids[4] {
		t.Fatalf("resume: %v", j)
	}
	carol := e.connect("carol", nil)
	j = carol.JoinAfter("general", "bogus")
	if j["recovered"] != false || len(j.Frames("history")) != 5 {
		t.Fatalf("bogus resume: %v", j)
	}
}

func TestDMAllConnections(t *testing.T) {
	e := newEnv(t, envOpts{})
	ac, _ := e.login("alice")
	bc, _ := e.login("bob")
	a1, a2 := e.connect("alice", ac), e.connect("alice", ac)
	b1, b2 := e.connect("bob", bc), e.connect("bob", bc)
	a1.Send(`{"type":"dm","to":"bob","text":"hi","ref":"d1"}`)
	for i, w := range []*webtest.Conn{a1, a2, b1, b2} {
		f := w.ExpectNext("dm", waitFor)
		if f.Str("from") != "alice" || f.Str("to") != "bob" || f.Str("text") != "hi" || f.Str("id") == "" || f.Int("ts") == 0 {
			t.Fatalf("conn %d: %v", i, f)
		}
		if hasRef := f["ref"] != nil; hasRef != (i == 0) {
			t.Fatalf("conn %d: ref %v", i, f["ref"])
		}
	}
}

func TestRateLimitFrame(t *testing.T) {
	e := newEnv(t, envOpts{hub: func(c *chat.Config) { c.RateLimit = 0.001; c.RateBurst = 2 }})
	w := e.connect("alice", nil)
	for i := range 3 {
		w.Send(fmt.Sprintf(`{"type":"ping","ref":"p%d"}`, i))
	}
	w.ExpectNext("pong", waitFor)
	w.ExpectNext("pong", waitFor)
	if f := w.ExpectNext("error", waitFor); f.Str("code") != chat.CodeRateLimited || f.Str("ref") != "p2" {
		t.Fatalf("%v", f)
	}
}

func TestTooLarge(t *testing.T) {
	e := newEnv(t, envOpts{web: func(c *Config) { c.MaxFrameBytes = 1024; c.HardFrameBytes = 8192 }})
	w := e.connect("alice", nil)
	w.Send(sendText(strings.Repeat("x", 2000)))
	if f := w.ExpectNext("error", waitFor); f.Str("code") != chat.CodeTooLarge {
		t.Fatalf("%v", f)
	}
	w.Send(`{"type":"ping"}`)
	w.ExpectNext("pong", waitFor)
	// Far past the hard cap, so that the node closes with most of the
	// frame unread: the close frame must still reach the client. The
	// write itself may fail: the client answers the close while writing.
	_ = w.TrySend([]byte(sendText(strings.Repeat("x", 256<<10))))
	if code := w.Closed(waitFor); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d", code)
	}
}

func TestSlowConsumer(t *testing.T) {
	e, fast := floodEnv(t, 16<<10)
	slow := e.connect("slow", nil)
	slow.Join("general")
	slow.Pause()
	floodUntilCut(t, e, fast, strings.Repeat("x", 3000))
	// The close frame gets through when the socket has room for it; a
	// client whose socket is backlogged sees the connection reset (no
	// close frame) instead, or dropped.
	if code := slow.Closed(waitFor); code != chat.CloseSlowConsumer && code != websocket.CloseAbnormalClosure && code != 0 {
		t.Fatalf("close code %d", code)
	}
}

// floodEnv starts a node with an outbound queue of queue bytes and no
// rate limit, and fast, a connection in general to flood it with
// (floodUntilCut).
func floodEnv(t *testing.T, queue int) (*env, *webtest.Conn) {
	t.Helper()
	e := newEnv(t, envOpts{hub: func(c *chat.Config) { c.QueueBytes = queue; c.RateLimit = chat.NoRateLimit }})
	fast := e.connect("fast", nil)
	fast.Join("general")
	return e, fast
}

// floodUntilCut has fast send text to general, each message once the one
// before came back (so fast keeps up), until the node cuts a slow
// consumer off.
func floodUntilCut(t *testing.T, e *env, fast *webtest.Conn, text string) {
	t.Helper()
	for i := 0; len(e.hub.SlowConsumers()) == 0; i++ {
		if i == 10000 {
			t.Fatal("slow consumer never cut off")
		}
		ref := fmt.Sprintf("r%d", i)
		fast.Send(map[string]string{"type": "send", "room": "general", "text": text, "ref": ref})
		fast.Expect("message", waitFor, func(f webtest.Frame) bool { return f.Str("ref") == ref })
	}
}

// A slow consumer learns that it was cut off as soon as it reads again:
// its connection is reset, with what the node's socket still held for
// it, rather than closed after that backlog. Closed in order, it would
// first read the megabytes the node dropped it for, and through a socket
// that drops segments that can take minutes, or never end at all when
// the kernel gives up retransmitting them.
func TestSlowConsumerReset(t *testing.T) {
	e, fast := floodEnv(t, 256<<10)
	slow := e.connect("slow", nil)
	slow.Join("general")
	slow.Pause()
	text := strings.Repeat("x", 3000)
	floodUntilCut(t, e, fast, text)
	checkReset(t, e, slow, len(text))
}

// checkReset reads slow (paused, and cut off as a slow consumer) again,
// once the node has let go of it, and checks that its connection ends
// having read no more messages of size bytes than its own receive buffer
// held: the queue fills only once the node's socket is full, and that
// holds megabytes for it (autotuned on loopback), its own receive buffer
// wsReadBuffer (twice that with the kernel's overhead), which is what a
// reset leaves it.
func checkReset(t *testing.T, e *env, slow *webtest.Conn, size int) {
	t.Helper()
	clustertest.WaitFor(t, waitFor, "the node to let go of the slow client", func() bool { return e.hub.Clients() == 1 })
	slow.Resume()
	n := 0
	for {
		f, ok := slow.TryNext(waitFor)
		if !ok {
			break
		}
		if f.Type() == "message" {
			n++
		}
	}
	if slow.Err() == nil {
		t.Fatalf("the cut connection still open after %d messages", n)
	}
	if limit := 4 * wsReadBuffer / size; n > limit {
		t.Fatalf("the cut client read %d messages before the end, want at most %d (its receive buffer)", n, limit)
	}
}

func TestClusterEndpoint(t *testing.T) {
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.Members = MembershipFunc(func() []Member {
			return []Member{
				{Name: "n1", HTTP: "http://127.0.0.1:8081", State: "alive"},
				{Name: "n2", HTTP: "http://127.0.0.1:8082", State: "suspect"},
				{Name: "n3", HTTP: "http://127.0.0.1:8083", State: "left"},
			}
		})
	}})
	var got struct {
		Node   string `json:"node"`
		Broker string `json:"broker"`
		Nodes  []struct{ Name, HTTP, State string }
	}
	if resp := e.do(newClient(t), "GET", "/api/cluster", "", nil, &got); resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	want := fmt.Sprint([]string{"n1 http://127.0.0.1:8081 alive", "n2 http://127.0.0.1:8082 suspect", "n3 http://127.0.0.1:8083 dead"})
	var have []string
	for _, n := range got.Nodes {
		have = append(have, n.Name+" "+n.HTTP+" "+n.State)
	}
	if got.Node != "n1" || got.Broker != "mesh" || fmt.Sprint(have) != want {
		t.Fatalf("cluster %+v", got)
	}
}

func TestProbesAndJSONErrors(t *testing.T) {
	ready := fmt.Errorf("cluster not joined")
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.Ready = func(context.Context) error { return ready }
		c.Mounts = map[string]http.Handler{"/_mesh/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Path", r.URL.Path)
			w.WriteHeader(299)
		})}
	}})
	c := newClient(t)
	if resp := e.do(c, "GET", "/healthz", "", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	var ae apiError
	if resp := e.do(c, "GET", "/readyz", "", nil, &ae); resp.StatusCode != 503 || ae.Error.Code != CodeNotReady {
		t.Fatalf("readyz %d %+v", resp.StatusCode, ae)
	}
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/api/nope", 404, CodeNotFound},
		{"GET", "/api/login", 405, CodeMethodNotAllow},
		{"DELETE", "/api/me", 405, CodeMethodNotAllow},
		{"GET", "/api/me", 401, CodeUnauthorized},
	}
	for _, tt := range tests {
		var ae apiError
		resp := e.do(c, tt.method, tt.path, "", nil, &ae)
		if resp.StatusCode != tt.status || ae.Error.Code != tt.code || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %+v", tt.method, tt.path, resp.StatusCode, ae)
		}
	}
	if resp := e.do(c, "POST", "/_mesh/publish", "x", nil, nil); resp.StatusCode != 299 || resp.Header.Get("X-Path") != "/_mesh/publish" {
		t.Fatalf("mount: %d %q", resp.StatusCode, resp.Header.Get("X-Path"))
	}
	if resp := e.do(c, "GET", "/", "", nil, nil); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("ui: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestShutdownClosesWith1012(t *testing.T) {
	e := newEnv(t, envOpts{})
	w := e.connect("alice", nil)
	w.Join("general")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	if code := w.Closed(waitFor); code != websocket.CloseServiceRestart {
		t.Fatalf("close code %d", code)
	}
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, resp, err := e.dial(newClient(t), "", nil); err == nil || resp.StatusCode == 101 {
		t.Fatal("dial after shutdown succeeded")
	}
}

func TestLogoutClosesSockets(t *testing.T) {
	e := newEnv(t, envOpts{})
	c, _ := e.login("alice")
	w := e.connect("alice", c)
	e.do(c, "POST", "/api/logout", "", nil, nil)
	if code := w.Closed(waitFor); code != chat.CloseLoggedOut {
		t.Fatalf("close code %d", code)
	}
}

// A user who logs out more often than the revocation record keeps one
// by one has the older logouts folded into "sessions issued until then":
// a logged-out session stays refused after its fold.
func TestLogoutsFoldedStayRevoked(t *testing.T) {
	e := newEnv(t, envOpts{})
	var tokens []string
	for range store.DefaultMaxRevocationsPerUser + 2 {
		c, tok := e.login("mallory")
		tokens = append(tokens, tok)
		if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
	}
	if live, _ := e.rev.Stats(); live >= len(tokens) {
		t.Fatalf("%d records for %d logouts of one user: nothing folded", live, len(tokens))
	}
	for i, tok := range tokens {
		if resp := e.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+tok), nil); resp.StatusCode != 401 {
			t.Fatalf("logged-out session %d answers %d", i, resp.StatusCode)
		}
	}
}

// failingRevoke cannot record a logout: the broker is unavailable.
type failingRevoke struct{ Revocations }

func (failingRevoke) Revoke(context.Context, store.Session) error {
	return transport.ErrUnavailable
}

// A logout that cannot be recorded cluster-wide fails with cookie
// sessions, which would otherwise live on, and can be retried; a
// server-side session ends with its key anyway.
func TestLogoutWhenRevocationFails(t *testing.T) {
	failing := func(c *Config) { c.Revocations = failingRevoke{c.Revocations} }
	e := newEnv(t, envOpts{web: failing})
	c, _ := e.login("alice")
	var ae apiError
	if resp := e.do(c, "POST", "/api/logout", "", nil, &ae); resp.StatusCode != 503 || ae.Error.Code != CodeUnavailable {
		t.Fatalf("cookie logout: %d %+v", resp.StatusCode, ae)
	}
	if resp := e.do(c, "GET", "/api/me", "", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("me after a failed logout: %d", resp.StatusCode)
	}

	_, _, sessions := redisSessions(t)
	er := newEnv(t, envOpts{web: func(c *Config) { c.Sessions = sessions; failing(c) }})
	cr, _ := er.login("bob")
	if resp := er.do(cr, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("redis logout: %d", resp.StatusCode)
	}
	if resp := er.do(cr, "GET", "/api/me", "", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("me after a redis logout: %d", resp.StatusCode)
	}
}

// redisSessions starts a throwaway Redis and a session store in it.
func redisSessions(t *testing.T) (*redistest.Server, *goredis.Client, sessions.Store) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	st, err := store.NewRedisSessions(context.Background(), rdb, store.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return srv, rdb, st
}

func TestRedisSessions(t *testing.T) {
	_, rdb, sessions := redisSessions(t)
	e := newEnv(t, envOpts{web: func(c *Config) { c.Sessions = sessions }})
	c, _ := e.login("alice")
	if n := len(rdb.Keys(context.Background(), store.RedisKeyPrefix+"*").Val()); n != 1 {
		t.Fatalf("%d session keys", n)
	}
	if resp := e.do(c, "GET", "/api/me", "", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("me %d", resp.StatusCode)
	}
	ck := cookieFor(t, c, e.ts.URL)
	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	if n := len(rdb.Keys(context.Background(), store.RedisKeyPrefix+"*").Val()); n != 0 {
		t.Fatalf("%d session keys after logout", n)
	}
	replay := newClient(t)
	replay.Jar.SetCookies(mustURL(e.ts.URL), []*http.Cookie{{Name: ck.Name, Value: ck.Value}})
	if resp := e.do(replay, "GET", "/api/me", "", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("replayed: %d", resp.StatusCode)
	}
}

// With sessions in Redis, a login that never connects leaves a key that
// expires soon; a connection makes it live as long as the session.
func TestRedisSessionKeptOnceConnected(t *testing.T) {
	_, rdb, sessions := redisSessions(t)
	e := newEnv(t, envOpts{web: func(c *Config) { c.Sessions = sessions }})
	ttl := func(s webtest.Session) time.Duration {
		t.Helper()
		return rdb.TTL(context.Background(), store.RedisKeyPrefix+cookieValue(t, s)).Val()
	}
	idle, byCookie := webtest.Login(t, e.ts.URL, "idle"), webtest.Login(t, e.ts.URL, "alice")
	for _, s := range []webtest.Session{idle, byCookie} {
		if d := ttl(s); d <= 0 || d > store.DefaultSessionFreshTTL {
			t.Fatalf("%s: a new session's key lives %v, want at most %v", s.User, d, store.DefaultSessionFreshTTL)
		}
	}
	webtest.Dial(t, e.ts.URL, byCookie, webtest.DialOptions{})
	if d := ttl(byCookie); d < store.DefaultSessionMaxAge-time.Hour {
		t.Errorf("a connected session's key lives %v, want about %v", d, store.DefaultSessionMaxAge)
	}
	if d := ttl(idle); d <= 0 || d > store.DefaultSessionFreshTTL {
		t.Errorf("idle: %v", d)
	}
}

func cookieValue(t *testing.T, s webtest.Session) string {
	t.Helper()
	for _, c := range s.Cookies {
		if c.Name == CookieName {
			return c.Value
		}
	}
	t.Fatalf("%s has no session cookie", s.User)
	return ""
}

// With sessions in Redis, a logged-out token is refused even by a node
// that never saw the logout (restarted, its revocations gone): the token
// names its session, and the session is gone from Redis.
func TestTokenRefusedAfterLogoutAndRestart(t *testing.T) {
	srv, _, sessions := redisSessions(t)
	withRedis := func(c *Config) { c.Sessions = sessions }
	e := newEnv(t, envOpts{web: withRedis})
	c, token := e.login("alice")
	bearer := hdr("Authorization", "Bearer "+token)
	if resp := e.do(newClient(t), "GET", "/api/me", "", bearer, nil); resp.StatusCode != 200 {
		t.Fatalf("token before logout: %d", resp.StatusCode)
	}
	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout %d", resp.StatusCode)
	}

	// A fresh node: new hub on a new network, no revocations at all.
	fresh := newEnv(t, envOpts{web: withRedis})
	var ae apiError
	if resp := fresh.do(newClient(t), "GET", "/api/me", "", bearer, &ae); resp.StatusCode != 401 || ae.Error.Code != CodeUnauthorized {
		t.Fatalf("logged-out token on a fresh node: %d %+v", resp.StatusCode, ae)
	}
	if _, resp, err := fresh.dial(nil, "token="+token, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("logged-out token on /ws of a fresh node: %v %v", err, resp)
	}
	// A live session's token still works there.
	_, token2 := e.login("bob")
	if resp := fresh.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+token2), nil); resp.StatusCode != 200 {
		t.Fatalf("live token on a fresh node: %d", resp.StatusCode)
	}
	// Redis down: the token's session cannot be checked.
	srv.Stop()
	if resp := fresh.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+token2), &ae); resp.StatusCode != 503 || ae.Error.Code != CodeUnavailable {
		t.Fatalf("token with redis down: %d %+v", resp.StatusCode, ae)
	}
}

// gatedHistory fails History until opened, so the hub cannot load the
// cluster's revocations.
type gatedHistory struct {
	*inproc.Broker
	open atomic.Bool
}

func (g *gatedHistory) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	if !g.open.Load() {
		return transport.HistoryResult{}, transport.ErrUnavailable
	}
	return g.Broker.History(ctx, ch, req)
}

// A node that has not loaded the cluster's logouts cannot tell a
// logged-out session from a live one: it answers 503, not 200.
func TestSessionsRefusedUntilRevocationsLoaded(t *testing.T) {
	var gate *gatedHistory
	e := newEnv(t, envOpts{loading: true, hub: func(c *chat.Config) {
		gate = &gatedHistory{Broker: c.Broker.(*inproc.Broker)}
		c.Broker = gate
	}})
	c, token := e.login("alice")
	var ae apiError
	if resp := e.do(c, "GET", "/api/me", "", nil, &ae); resp.StatusCode != 503 || ae.Error.Code != CodeUnavailable {
		t.Fatalf("cookie before revocations loaded: %d %+v", resp.StatusCode, ae)
	}
	if _, resp, err := e.dial(nil, "token="+token, nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("ws before revocations loaded: %v %v", err, resp)
	}
	// No session at all is still a plain 401.
	if resp := e.do(newClient(t), "GET", "/api/me", "", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("no session: %d", resp.StatusCode)
	}
	gate.open.Store(true)
	clustertest.WaitFor(t, waitFor, "revocations loaded", e.rev.Loaded)
	if resp := e.do(c, "GET", "/api/me", "", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("cookie after load: %d", resp.StatusCode)
	}
}

// Too-large frames cost rate-limit tokens like any other frame.
func TestTooLargeIsRateLimited(t *testing.T) {
	e := newEnv(t, envOpts{
		hub: func(c *chat.Config) { c.RateLimit = 0.001; c.RateBurst = 2 },
		web: func(c *Config) { c.MaxFrameBytes = 1024; c.HardFrameBytes = 8192 },
	})
	w := e.connect("alice", nil)
	big := sendText(strings.Repeat("x", 2000))
	for range 3 {
		w.Send(big)
	}
	for _, want := range []string{chat.CodeTooLarge, chat.CodeTooLarge, chat.CodeRateLimited} {
		if f := w.ExpectNext("error", waitFor); f.Str("code") != want {
			t.Fatalf("got %v, want %s", f, want)
		}
	}
}

// Keepalive: a client that answers pings stays connected however long it
// idles, and its frames still reach the hub afterwards (the server
// consumes pongs while the connection idles); one that does not answer is
// dropped after PongTimeout.
func TestKeepalive(t *testing.T) {
	e := newEnv(t, envOpts{web: func(c *Config) {
		// A pong timeout a loaded machine's scheduler cannot miss by
		// accident, and pings often enough to pass it many times over.
		c.PingInterval = 50 * time.Millisecond
		c.PongTimeout = time.Second
	}})

	pings := make(chan struct{}, 100)
	c, _ := e.login("alive")
	alive := webtest.Dial(t, e.ts.URL, e.session("alive", c), webtest.DialOptions{
		ReadBuffer: wsReadBuffer,
		OnPing: func(string) {
			select {
			case pings <- struct{}{}:
			default:
			}
		},
	})
	// Well past PongTimeout: forty pings, each answered.
	deadline := time.After(waitFor)
	for range 40 {
		select {
		case <-pings:
		case <-deadline:
			t.Fatal("fewer than 40 pings")
		}
	}
	alive.Send(`{"type":"join","room":"lobby"}`)
	alive.Expect("joined", waitFor, nil)

	// This one stops reading after its welcome, so never answers a ping.
	e.connect("silent", nil).Pause()
	clustertest.WaitFor(t, waitFor, "the silent connection to be dropped", func() bool { return e.hub.Clients() == 1 })
}

// sendText is a send frame of text to room general.
func sendText(text string) string {
	return fmt.Sprintf(`{"type":"send","room":"general","text":"%s"}`, text)
}

// DNS rebinding: a page on an attacker's name, rebound to the node's
// address, sends that name as Host and as Origin. The two matching proves
// nothing: the Host must be one the node answers to.
func TestOriginRefusesReboundHost(t *testing.T) {
	e := newEnv(t, envOpts{web: func(c *Config) { c.AllowedOrigins = []string{"http://chat.example.com"} }})
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"rebind.example", false},
		{"rebind.example:8080", false},
		{"chat.example.com", true},
		{"localhost", true},
		{"127.0.0.1", true},
		{"[::1]:8080", true},
	} {
		req, err := http.NewRequest("POST", e.ts.URL+"/api/login", strings.NewReader(`{"name":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tt.host
		req.Header.Set("Origin", "http://"+tt.host)
		req.Header.Set("Content-Type", "application/json")
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode == 200) != tt.ok {
			t.Errorf("Host and Origin %s: %d, want ok=%v", tt.host, resp.StatusCode, tt.ok)
		}
	}
}
