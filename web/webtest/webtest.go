// Package webtest is the test kit's client of meshchat's public protocol:
// the HTTP API (login, /api/cluster, /readyz) and a WebSocket connection
// whose frames a test reads with deadlines. Every test that talks to a
// node the way an outside client would uses it, whatever starts the node.
//
// It speaks only HTTP and JSON, imports nothing of meshchat, and is never
// used by production code.
package webtest

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// Client is an HTTP client without shared idle connections, closed with
// the test so that no keep-alive goroutine outlives it.
func Client(tb testing.TB, jar http.CookieJar) *http.Client {
	return TLSClient(tb, jar, nil)
}

// TLSClient is Client verifying https servers with cfg (nil: the
// system roots), for nodes serving a certificate the test made.
func TLSClient(tb testing.TB, jar http.CookieJar, cfg *tls.Config) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: cfg}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 10 * time.Second}
}

// CookieClient is Client with a fresh cookie jar, as a browser keeps one:
// what the server sets (a session, its renewal, its removal) comes back
// with the next request.
func CookieClient(tb testing.TB) *http.Client {
	tb.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return Client(tb, jar)
}

// Get returns the status and body of a GET, 0 when the request fails.
func Get(tb testing.TB, url string, cookies []*http.Cookie) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := Client(tb, nil).Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// Session is one logged-in user agent: the cookies the login answered.
type Session struct {
	User    string
	Node    string // node that handled the login
	Token   string // the login's bearer token
	Cookies []*http.Cookie
}

// Login posts /api/login {"name":user} on base (a node of --auth open)
// and returns the session.
func Login(tb testing.TB, base, user string) Session {
	tb.Helper()
	return Post(tb, base, "/api/login", user, `{"name":"`+user+`"}`)
}

// Register posts /api/register on base (a node of --auth password) and
// returns the new account's session.
func Register(tb testing.TB, base, user, password string) Session {
	tb.Helper()
	body, _ := json.Marshal(map[string]string{"name": user, "password": password})
	return Post(tb, base, "/api/register", user, string(body))
}

// LoginPassword posts /api/login with a password and returns the
// session.
func LoginPassword(tb testing.TB, base, user, password string) Session {
	tb.Helper()
	body, _ := json.Marshal(map[string]string{"name": user, "password": password})
	return Post(tb, base, "/api/login", user, string(body))
}

// LoginTLS is Login on an https node whose certificate cfg verifies.
func LoginTLS(tb testing.TB, cfg *tls.Config, base, user string) Session {
	tb.Helper()
	return post(tb, TLSClient(tb, nil, cfg), base, "/api/login", user, `{"name":"`+user+`"}`)
}

// Post posts body to an endpoint that logs user in (path: /api/login,
// /api/register) and returns the session; anything but 200 fails tb.
func Post(tb testing.TB, base, path, user, body string) Session {
	tb.Helper()
	return post(tb, CookieClient(tb), base, path, user, body)
}

// post is Post through client c.
func post(tb testing.TB, c *http.Client, base, path, user, body string) Session {
	tb.Helper()
	s, status, out := tryPost(tb, c, base, path, user, body)
	if status != http.StatusOK {
		tb.Fatalf("%s %s at %s: %d %s", path, user, base, status, out)
	}
	return s
}

// TryLogin posts /api/login {"name":user} on base (a node of --auth
// open), as Login does, and returns the status and the body too: for
// tests of a login refused. The session is set only with 200.
func TryLogin(tb testing.TB, base, user string) (Session, int, Frame) {
	tb.Helper()
	s, status, out := TryPost(tb, base, "/api/login", user, `{"name":"`+user+`"}`)
	var f Frame
	_ = json.Unmarshal(out, &f)
	return s, status, f
}

// TryPost is Post that returns the status and body instead of failing
// tb when the answer is not 200 (a request that cannot be made still
// fails it). The session is set only with 200.
func TryPost(tb testing.TB, base, path, user, body string) (Session, int, []byte) {
	tb.Helper()
	return tryPost(tb, CookieClient(tb), base, path, user, body)
}

func tryPost(tb testing.TB, c *http.Client, base, path, user, body string) (Session, int, []byte) {
	tb.Helper()
	resp, err := c.Post(base+path, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatalf("%s %s at %s: %v", path, user, base, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return Session{}, resp.StatusCode, out
	}
	var v struct{ User, Node, Token string }
	if err := json.Unmarshal(out, &v); err != nil || v.User != user || v.Node == "" {
		tb.Fatalf("%s %s: body %s (%v)", path, user, out, err)
	}
	if len(resp.Cookies()) == 0 {
		tb.Fatalf("%s %s: no cookie", path, user)
	}
	return Session{User: user, Node: v.Node, Token: v.Token, Cookies: resp.Cookies()}, resp.StatusCode, out
}

// Do sends a request with the session's cookies and returns status and
// body.
func (s Session) Do(tb testing.TB, method, url string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range s.Cookies {
		req.AddCookie(c)
	}
	return send(tb, req)
}

// Ticket fetches a one-time ticket for the session from base (POST
// /api/ticket with the session's cookies, or with its bearer token when
// bearer is set): the value for /ws?ticket= and /api/events?ticket=.
// Anything but 200 fails tb.
func (s Session) Ticket(tb testing.TB, base string, bearer bool) string {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/ticket", nil)
	if err != nil {
		tb.Fatal(err)
	}
	if bearer {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	} else {
		for _, c := range s.Cookies {
			req.AddCookie(c)
		}
	}
	status, body := send(tb, req)
	var v struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &v); status != http.StatusOK || err != nil || v.Ticket == "" || v.ExpiresIn <= 0 {
		tb.Fatalf("ticket for %s at %s: %d %s", s.User, base, status, body)
	}
	return v.Ticket
}

// send makes the request and returns the status and body, failing the
// test when it cannot be made.
func send(tb testing.TB, req *http.Request) (int, []byte) {
	tb.Helper()
	resp, err := Client(tb, nil).Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// API calls the server API on base: method on /api/server+path (such as
// "/publish"), with key as the bearer ("" sends no Authorization) and body
// as JSON ("" sends none). It returns the status and body, and fails the
// test when the request cannot be made.
func API(tb testing.TB, base, key, method, path, body string) (int, []byte) {
	tb.Helper()
	return Bearer(tb, base, key, method, "/api/server"+path, body)
}

// Bearer sends method on base+path with token as the bearer ("" sends no
// Authorization) and body as JSON ("" sends none), as API does for any
// path (the admin endpoints take the API key too).
func Bearer(tb testing.TB, base, token, method, path, body string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return send(tb, req)
}

// WaitReady waits until every base answers /readyz with 200.
func WaitReady(tb testing.TB, timeout time.Duration, bases ...string) time.Duration {
	tb.Helper()
	return clustertest.WaitFor(tb, timeout, "/readyz 200 on "+strings.Join(bases, ", "), func() bool {
		for _, b := range bases {
			if st, _ := Get(tb, b+"/readyz", nil); st != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// ClusterView is GET /api/cluster.
type ClusterView struct {
	Node   string `json:"node"`
	Broker string `json:"broker"`
	Nodes  []struct {
		Name  string `json:"name"`
		HTTP  string `json:"http"`
		State string `json:"state"`
	} `json:"nodes"`
}

// GetCluster reads base's /api/cluster; false when it does not answer 200.
func GetCluster(tb testing.TB, base string) (ClusterView, bool) {
	tb.Helper()
	st, body := Get(tb, base+"/api/cluster", nil)
	if st != http.StatusOK {
		return ClusterView{}, false
	}
	var v ClusterView
	if err := json.Unmarshal(body, &v); err != nil {
		tb.Fatalf("/api/cluster: %v: %s", err, body)
	}
	return v, true
}

// StateOf is the state base reports for node name ("" when not listed).
func StateOf(tb testing.TB, base, name string) string {
	tb.Helper()
	v, ok := GetCluster(tb, base)
	if !ok {
		return ""
	}
	for _, n := range v.Nodes {
		if n.Name == name {
			return n.State
		}
	}
	return ""
}

// Frame is one decoded server frame.
type Frame map[string]any

// Str is the string field k, or "".
func (f Frame) Str(k string) string { s, _ := f[k].(string); return s }

// Type is the frame's type.
func (f Frame) Type() string { return f.Str("type") }

// Members is the string list field "members" (joined and presence frames).
func (f Frame) Members() []string { return f.Strings("members") }

// Int is the number field k (a timestamp), or 0.
func (f Frame) Int(k string) int64 { n, _ := f[k].(float64); return int64(n) }

// Strings is the string list field k.
func (f Frame) Strings(k string) []string { return listOf[string](f[k]) }

// Frames is the list field k of objects, such as a joined frame's
// history.
func (f Frame) Frames(k string) []Frame {
	objs := listOf[map[string]any](f[k])
	out := make([]Frame, len(objs))
	for i, o := range objs {
		out[i] = o
	}
	return out
}

// listOf is the elements of the JSON list v that are T.
func listOf[T any](v any) []T {
	raw, _ := v.([]any)
	out := make([]T, 0, len(raw))
	for _, e := range raw {
		if t, ok := e.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// Has reports whether the string list field k holds s.
func (f Frame) Has(k, s string) bool { return slices.Contains(f.Strings(k), s) }
