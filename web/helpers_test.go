package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
	"github.com/meshchat/meshchat/web/webtest"
)

func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m) }

// waitFor bounds each wait in these tests.
const waitFor = 5 * time.Second

type env struct {
	t   testing.TB
	hub *chat.Hub
	rev *store.Revocations
	acc *store.Accounts
	srv *Server
	ts  *httptest.Server
}

type envOpts struct {
	net  *inproc.Network
	node string
	hub  func(*chat.Config)
	web  func(*Config)
	// srv, when set, adjusts the server before it serves (its clock).
	srv func(*Server)
	// loading: do not wait for the node to load revocations (sessions
	// are refused with 503 until it has).
	loading bool
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.node == "" {
		o.node = "n1"
	}
	b, err := inproc.New(inproc.Config{Node: o.node, Network: o.net})
	if err != nil {
		t.Fatal(err)
	}
	hc := chat.Config{Node: o.node, Broker: b}
	if o.hub != nil {
		o.hub(&hc)
	}
	rev, err := store.NewRevocations(store.RevocationConfig{Node: o.node, Broker: hc.Broker})
	if err != nil {
		t.Fatal(err)
	}
	hc.Revocations = rev
	acc, err := store.NewAccounts(store.AccountsConfig{Node: o.node, Broker: hc.Broker, Password: store.TestPasswordParams})
	if err != nil {
		t.Fatal(err)
	}
	hc.System = systemHandlers{rev, acc}
	hub, err := chat.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rev.Start(context.Background(), hub.DisconnectSession); err != nil {
		t.Fatal(err)
	}
	err = acc.Start(context.Background(), func(user string, banned bool) {
		if banned {
			hub.CloseUser(user, chat.CloseBanned, "banned")
		} else {
			hub.CloseUser(user, chat.CloseLoggedOut, "logged_out")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !o.loading {
		clustertest.WaitFor(t, waitFor, "the hub to load revocations and accounts", func() bool {
			return rev.Loaded() && acc.Loaded()
		})
	}
	wc := Config{
		Hub:         hub,
		Sessions:    store.NewCookieStore([]byte(strings.Repeat("h", 32)), []byte(strings.Repeat("b", 32)), store.SessionOptions{}),
		Revocations: rev,
		Auth:        AuthOpen,
		Accounts:    acc,
		BrokerName:  "mesh",
		TokenKey:    []byte("token-key"),
		AuthLimits:  AuthLimits{AttemptsPerMinute: 6000, AttemptBurst: 1000},
	}
	if o.web != nil {
		o.web(&wc)
	}
	srv, err := New(wc)
	if err != nil {
		t.Fatal(err)
	}
	if o.srv != nil {
		o.srv(srv)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config.ConnContext = ConnContext
	ts.Start()
	e := &env{t: t, hub: hub, rev: rev, acc: acc, srv: srv, ts: ts}
	// Cleanups run last registered first: web, revocations, listener,
	// broker.
	clustertest.Cleanup(t, "broker close", b.Close)
	t.Cleanup(ts.Close)
	clustertest.Cleanup(t, "revocations shutdown", rev.Shutdown)
	clustertest.Cleanup(t, "accounts shutdown", acc.Shutdown)
	clustertest.Cleanup(t, "web shutdown", srv.Shutdown)
	return e
}

// systemHandlers hands "s:" publications to each table, as the node does.
type systemHandlers []transport.Handler

func (h systemHandlers) HandlePublication(channel string, pub transport.Publication) {
	for _, x := range h {
		x.HandlePublication(channel, pub)
	}
}

// newClient is an HTTP client with its own cookies, as a browser has.
func newClient(t testing.TB) *http.Client { return webtest.CookieClient(t) }

// do sends a request and decodes a JSON answer into out (when non-nil).
func (e *env) do(c *http.Client, method, path, body string, hdr http.Header, out any) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp
}

type loginAnswer struct {
	User, Node, Token string
}

// login returns a cookie-carrying client for name and its token.
func (e *env) login(name string) (*http.Client, string) {
	e.t.Helper()
	c := newClient(e.t)
	var a loginAnswer
	resp := e.do(c, "POST", "/api/login", fmt.Sprintf(`{"name":%q}`, name), nil, &a)
	if resp.StatusCode != 200 || a.User != name || a.Token == "" {
		e.t.Fatalf("login %s: %d %+v", name, resp.StatusCode, a)
	}
	return c, a.Token
}

// session is what c would send to this server as user's WebSocket
// (no cookies when c is nil).
func (e *env) session(user string, c *http.Client) webtest.Session {
	s := webtest.Session{User: user}
	if c != nil {
		s.Cookies = c.Jar.Cookies(mustURL(e.ts.URL))
	}
	return s
}

// wsReadBuffer is every test socket's receive buffer, small so that a
// client that stops reading soon looks slow to the server.
const wsReadBuffer = 64 << 10

// dial opens /ws with c's cookies, for tests of the handshake.
func (e *env) dial(c *http.Client, query string, h http.Header) (*websocket.Conn, *http.Response, error) {
	return webtest.TryDial(e.ts.URL, e.session("", c), webtest.DialOptions{Query: query, Header: h, ReadBuffer: wsReadBuffer})
}

// connect logs in (when c is nil) and opens a WebSocket, checking the
// welcome frame.
func (e *env) connect(user string, c *http.Client) *webtest.Conn {
	e.t.Helper()
	if c == nil {
		c, _ = e.login(user)
	}
	return webtest.Dial(e.t, e.ts.URL, e.session(user, c), webtest.DialOptions{ReadBuffer: wsReadBuffer})
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func cookieFor(t *testing.T, c *http.Client, base string) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == CookieName {
			return ck
		}
	}
	return nil
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
