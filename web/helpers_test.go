package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport/inproc"
)

const waitFor = 5 * time.Second

func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m) }

// The record package store keeps is what web and chat declare they need.
// store may import neither, so the checks live here.
var (
	_ Revocations      = (*store.Revocations)(nil)
	_ chat.Revocations = (*store.Revocations)(nil)
)

type env struct {
	t   testing.TB
	hub *chat.Hub
	rev *store.Revocations
	srv *Server
	ts  *httptest.Server
}

type envOpts struct {
	net  *inproc.Network
	node string
	hub  func(*chat.Config)
	web  func(*Config)
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
	if !o.loading {
		deadline := time.Now().Add(waitFor)
		for !rev.Loaded() {
			if time.Now().After(deadline) {
				t.Fatal("hub did not load revocations")
			}
			time.Sleep(time.Millisecond)
		}
	}
	wc := Config{
		Hub:         hub,
		Sessions:    store.NewCookieStore([]byte(strings.Repeat("h", 32)), []byte(strings.Repeat("b", 32)), store.SessionOptions{}),
		Revocations: rev,
		BrokerName:  "mesh",
		TokenKey:    []byte("token-key"),
	}
	if o.web != nil {
		o.web(&wc)
	}
	srv, err := New(wc)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	e := &env{t: t, hub: hub, rev: rev, srv: srv, ts: ts}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("web shutdown: %v", err)
		}
		if err := rev.Shutdown(ctx); err != nil {
			t.Errorf("revocations shutdown: %v", err)
		}
		ts.Close()
		if err := b.Close(ctx); err != nil {
			t.Errorf("broker close: %v", err)
		}
	})
	return e
}

func newClient(t testing.TB) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: waitFor}
}

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

func (e *env) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

func (e *env) dial(c *http.Client, query string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: waitFor, NetDialContext: smallReadBuffer}
	if c != nil {
		d.Jar = c.Jar
	}
	return d.Dial(e.wsURL(query), hdr)
}

// smallReadBuffer dials with a fixed 64 KiB receive buffer. Left to
// autotuning, loopback sockets grow to tens of megabytes, and a client that
// stops reading would take that long to look slow to the server.
func smallReadBuffer(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		if err := tc.SetReadBuffer(64 << 10); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// wsc is a test WebSocket client.
type wsc struct {
	t    testing.TB
	conn *websocket.Conn
}

type frame struct {
	Type      string   `json:"type"`
	Room      string   `json:"room"`
	ID        string   `json:"id"`
	From      string   `json:"from"`
	To        string   `json:"to"`
	Text      string   `json:"text"`
	TS        int64    `json:"ts"`
	Ref       *string  `json:"ref"`
	Code      string   `json:"code"`
	User      string   `json:"user"`
	Node      string   `json:"node"`
	Nodes     []string `json:"nodes"`
	Online    *bool    `json:"online"`
	Members   []string `json:"members"`
	History   []frame  `json:"history"`
	Recovered *bool    `json:"recovered"`
}

// connect logs in (when c is nil) and opens a WebSocket, checking the
// welcome frame.
func (e *env) connect(user string, c *http.Client) *wsc {
	e.t.Helper()
	if c == nil {
		c, _ = e.login(user)
	}
	conn, resp, err := e.dial(c, "", nil)
	if err != nil {
		e.t.Fatalf("dial as %s: %v (%v)", user, err, resp)
	}
	w := &wsc{t: e.t, conn: conn}
	e.t.Cleanup(func() { conn.Close() })
	if f := w.next(); f.Type != "welcome" || f.User != user {
		e.t.Fatalf("first frame %+v", f)
	}
	return w
}

func (w *wsc) send(format string, args ...any) {
	w.t.Helper()
	if err := w.conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(format, args...))); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsc) next() frame {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(waitFor))
	_, data, err := w.conn.ReadMessage()
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		w.t.Fatalf("frame %q: %v", data, err)
	}
	return f
}

func (w *wsc) until(what string, ok func(frame) bool) frame {
	w.t.Helper()
	for range 10000 {
		if f := w.next(); ok(f) {
			return f
		}
	}
	w.t.Fatalf("no %s", what)
	return frame{}
}

func (w *wsc) expect(typ string) frame {
	w.t.Helper()
	f := w.next()
	if f.Type != typ {
		w.t.Fatalf("got %+v, want %s", f, typ)
	}
	return f
}

func (w *wsc) join(room, after string) frame {
	w.t.Helper()
	if after == "" {
		w.send(`{"type":"join","room":%q}`, room)
	} else {
		w.send(`{"type":"join","room":%q,"after":%q}`, room, after)
	}
	return w.until("joined", func(f frame) bool { return f.Type == "joined" && f.Room == room })
}

// closeCode reads until the connection ends and returns the close code.
func (w *wsc) closeCode() int {
	w.t.Helper()
	for {
		_ = w.conn.SetReadDeadline(time.Now().Add(waitFor))
		_, _, err := w.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		w.t.Fatalf("connection ended without close frame: %v", err)
	}
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
