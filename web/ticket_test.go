package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/web/webtest"
)

// refused dials /ws with the ticket and no other credentials and returns
// the refusal's status and error code.
func (e *env) refused(ticket string) (int, string) {
	e.t.Helper()
	ws, resp, err := e.dial(nil, "ticket="+ticket, nil)
	if err == nil {
		ws.Close()
		e.t.Fatalf("ticket %.20s... accepted", ticket)
	}
	if resp == nil {
		e.t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	var ae apiError
	body, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(body, &ae)
	return resp.StatusCode, ae.Error.Code
}

func TestTicketOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := webtest.Login(t, e.ts.URL, "alice")
	ticket := alice.Ticket(t, e.ts.URL, false)
	c := webtest.Dial(t, e.ts.URL, webtest.Session{User: "alice"}, webtest.DialOptions{Query: "ticket=" + ticket})
	c.Close()
	if st, code := e.refused(ticket); st != http.StatusUnauthorized || code != CodeTicketUsed {
		t.Fatalf("a ticket used twice: %d %q, want 401 %s", st, code, CodeTicketUsed)
	}

	// A ticket fetched with the bearer token opens an events stream,
	// once too.
	ticket = alice.Ticket(t, e.ts.URL, true)
	q := webtest.EventsOptions{Dial: webtest.DialOptions{Query: "ticket=" + ticket}}
	webtest.Events(t, e.ts.URL, webtest.Session{User: "alice"}, q).Close()
	resp, err := webtest.TryEvents(t, e.ts.URL, webtest.Session{}, q)
	if err != nil {
		t.Fatal(err)
	}
	var ae apiError
	_ = json.NewDecoder(resp.Body).Decode(&ae)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || ae.Error.Code != CodeTicketUsed {
		t.Fatalf("an events ticket used twice: %d %+v", resp.StatusCode, ae)
	}

	// Without a session there is no ticket.
	var none apiError
	if resp := e.do(newClient(t), "POST", "/api/ticket", "", nil, &none); resp.StatusCode != 401 || none.Error.Code != CodeUnauthorized {
		t.Fatalf("ticket without a session: %d %+v", resp.StatusCode, none)
	}
}

func TestTicketExpires(t *testing.T) {
	var skew atomic.Int64
	e := newEnv(t, envOpts{srv: func(s *Server) {
		s.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}})
	alice := webtest.Login(t, e.ts.URL, "alice")
	ticket := alice.Ticket(t, e.ts.URL, false)
	skew.Store(int64(DefaultTicketTTL))
	if st, code := e.refused(ticket); st != http.StatusUnauthorized || code != CodeTicketExpired {
		t.Fatalf("an expired ticket: %d %q, want 401 %s", st, code, CodeTicketExpired)
	}
	// One used just in time works.
	ticket = alice.Ticket(t, e.ts.URL, false)
	skew.Add(int64(DefaultTicketTTL - time.Second))
	webtest.Dial(t, e.ts.URL, webtest.Session{User: "alice"}, webtest.DialOptions{Query: "ticket=" + ticket})
}

func TestTicketForged(t *testing.T) {
	e := newEnv(t, envOpts{})
	alice := webtest.Login(t, e.ts.URL, "alice")
	ticket := alice.Ticket(t, e.ts.URL, false)
	payload, mac, _ := strings.Cut(ticket, ".")
	fields := strings.Split(mustDecode(t, payload), "|")
	asBob := append([]string{}, fields...)
	asBob[1] = "bob"
	other := &Server{tokenKey: []byte("another key")}
	for name, forged := range map[string]string{
		"signed with another key": other.seal("ticket", fields...),
		"signed as another kind":  e.srv.seal("token", fields...),
		"payload changed":         strings.Split(e.srv.seal("ticket", asBob...), ".")[0] + "." + mac,
		"a token":                 alice.Token,
		"no mac":                  payload,
		"garbage":                 "not.a-ticket",
		"bit flipped":             flip(ticket),
	} {
		if st, code := e.refused(forged); st != http.StatusUnauthorized || code != CodeBadTicket {
			t.Errorf("%s: %d %q, want 401 %s", name, st, code, CodeBadTicket)
		}
	}
	// The real one still works: nothing above spent it.
	webtest.Dial(t, e.ts.URL, webtest.Session{User: "alice"}, webtest.DialOptions{Query: "ticket=" + ticket})
}

// A ticket is good on the node it was issued by only; elsewhere the
// request's other credentials decide (a load balancer may send the
// ticket request and the connection to different nodes).
func TestTicketOtherNode(t *testing.T) {
	n1 := newEnv(t, envOpts{node: "n1"})
	n2 := newEnv(t, envOpts{node: "n2"})
	alice := webtest.Login(t, n1.ts.URL, "alice")
	ticket := alice.Ticket(t, n1.ts.URL, false)
	if st, code := n2.refused(ticket); st != http.StatusUnauthorized || code != CodeBadTicket {
		t.Fatalf("n1's ticket alone on n2: %d %q, want 401 %s", st, code, CodeBadTicket)
	}
	webtest.Dial(t, n2.ts.URL, alice, webtest.DialOptions{Query: "ticket=" + ticket})
	webtest.Dial(t, n1.ts.URL, webtest.Session{User: "alice"}, webtest.DialOptions{Query: "ticket=" + ticket})
}

// A ticket stands for its session: after a logout it opens nothing.
func TestTicketAfterLogout(t *testing.T) {
	e := newEnv(t, envOpts{})
	c, _ := e.login("alice")
	s := e.session("alice", c)
	ticket := s.Ticket(t, e.ts.URL, false)
	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	if st, code := e.refused(ticket); st != http.StatusUnauthorized || code != CodeUnauthorized {
		t.Fatalf("a ticket of a logged-out session: %d %q", st, code)
	}
}

// The page of another node fetches a ticket across origins with its
// bearer token.
func TestTicketCORS(t *testing.T) {
	const page = "http://other-node.example:8082"
	e := newEnv(t, envOpts{web: func(c *Config) { c.AllowedOrigins = []string{page} }})
	alice := webtest.Login(t, e.ts.URL, "alice")
	resp := e.do(newClient(t), "OPTIONS", "/api/ticket", "", hdr("Origin", page,
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization"), nil)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != page ||
		resp.Header.Get("Access-Control-Allow-Headers") != "Authorization" || resp.Header.Get("Access-Control-Allow-Methods") != "POST" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	var v struct{ Ticket string }
	resp = e.do(newClient(t), "POST", "/api/ticket", "", hdr("Origin", page, "Authorization", "Bearer "+alice.Token), &v)
	if resp.StatusCode != 200 || v.Ticket == "" || resp.Header.Get("Access-Control-Allow-Origin") != page ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("cross-origin ticket: %d %v %+v", resp.StatusCode, resp.Header, v)
	}
	var ae apiError
	resp = e.do(newClient(t), "POST", "/api/ticket", "", hdr("Origin", "http://evil.example", "Authorization", "Bearer "+alice.Token), &ae)
	if resp.StatusCode != 403 || ae.Error.Code != CodeForbiddenOrigin || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("ticket for a foreign origin: %d %+v", resp.StatusCode, ae)
	}
}

// A ticket confirms its Redis session as a connection with the cookie
// does (TestRedisSessionKeptOnceConnected); fetching one does not.
func TestRedisSessionKeptByTicket(t *testing.T) {
	_, rdb, sessions := redisSessions(t)
	e := newEnv(t, envOpts{web: func(c *Config) { c.Sessions = sessions }})
	bob := webtest.Login(t, e.ts.URL, "bob")
	key := store.RedisKeyPrefix + cookieValue(t, bob)
	ticket := bob.Ticket(t, e.ts.URL, false)
	if d := rdb.TTL(context.Background(), key).Val(); d <= 0 || d > store.DefaultSessionFreshTTL {
		t.Fatalf("after a ticket was fetched the key lives %v, want at most %v", d, store.DefaultSessionFreshTTL)
	}
	webtest.Dial(t, e.ts.URL, webtest.Session{User: "bob"}, webtest.DialOptions{Query: "ticket=" + ticket})
	if d := rdb.TTL(context.Background(), key).Val(); d < store.DefaultSessionMaxAge-time.Hour {
		t.Errorf("after a ticket was used the key lives %v, want about %v", d, store.DefaultSessionMaxAge)
	}
}

func mustDecode(t *testing.T, b64 string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("cannot decode %q: %v", b64, err)
	}
	return string(b)
}

// flip changes one bit of the ticket's mac.
func flip(ticket string) string {
	b := []byte(ticket)
	i := len(b) - 3
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
