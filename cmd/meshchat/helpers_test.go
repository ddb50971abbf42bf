package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	goredis "github.com/redis/go-redis/v9"
)

// testSecret is the cluster secret of every test cluster.
const testSecret = "meshchat-test-secret-0123456789abcdef"

// requireBinary returns the path of an external program the test needs.
// Missing, it skips the test with the package to install, or fails it
// when CI=true (CI installs everything; a skip there would hide a gap).
func requireBinary(t testing.TB, name, debPkg string, paths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: apt-get install %s", name, debPkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// waitFor polls cond until it holds or timeout passes, then fails the
// test with what. It returns how long it waited.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLog collects a node's logs and prints them only when the test fails:
// passing runs stay quiet, failing ones show everything. Writing to t.Log
// directly would race with goroutines that outlive a subtest.
type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func newTestLogger(t testing.TB) *slog.Logger {
	l := &testLog{}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			t.Logf("node logs:\n%s", l.buf.String())
			l.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a node on 127.0.0.1 with free ports.
func testConfig(t testing.TB, name, broker, redisURL string, join ...string) Config {
	cfg := defaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.Name = name
	cfg.Broker = broker
	cfg.RedisURL = redisURL
	cfg.Secret = testSecret
	cfg.Join = join
	cfg.Logger = newTestLogger(t)
	cfg.ShutdownTimeout = 10 * time.Second
	return cfg
}

// startNode starts a node and stops it (gracefully) when the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatalf("NewNode(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("Stop(%s): %v", n.Name(), err)
		}
	})
	return n
}

// startCluster starts size nodes n1..nN, all joined through n1, and waits
// until every node sees every other alive and is ready.
func startCluster(t testing.TB, size int, broker, redisURL string) []*Node {
	t.Helper()
	return startClusterWith(t, size, broker, redisURL, nil)
}

// startClusterWith is startCluster with a hook that adjusts node i's
// config before it starts.
func startClusterWith(t testing.TB, size int, broker, redisURL string, adjust func(i int, cfg *Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range size {
		var join []string
		if i > 0 {
			join = []string{nodes[0].GossipAddr()}
		}
		cfg := testConfig(t, fmt.Sprintf("n%d", i+1), broker, redisURL, join...)
		if adjust != nil {
			adjust(i, &cfg)
		}
		nodes = append(nodes, startNode(t, cfg))
	}
	waitFor(t, 20*time.Second, "cluster to converge", func() bool {
		for _, n := range nodes {
			if len(n.Cluster().Alive()) != size {
				return false
			}
			st, _ := httpGet(t, n.URL()+"/readyz", nil)
			if st != http.StatusOK {
				return false
			}
		}
		return true
	})
	return nodes
}

// freeAddr returns 127.0.0.1:<port> with a port that was free for TCP
// (and UDP when udp is set) a moment ago, for a process the test starts.
//
// The port comes from below the kernel's ephemeral range (32768 and up
// by default), not from a listener on port 0: a port from that range can
// be handed to an outgoing connection (of this test, a node or another
// test package) between the check and the process's bind, and the node
// then fails with "address already in use". No port is handed out twice.
func freeAddr(t testing.TB, udp bool) string {
	t.Helper()
	usedPorts.Lock()
	defer usedPorts.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if usedPorts.m[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			pc.Close()
		}
		usedPorts.m[port] = true
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// usedPorts are the ports freeAddr handed out in this test process.
var usedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: make(map[int]bool)}

// httpClient is a client without shared idle connections, closed with the
// test so no keep-alive goroutine outlives it.
func httpClient(t testing.TB, jar http.CookieJar) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 10 * time.Second}
}

// httpGet returns the status and body of a GET, 0 when the request fails.
func httpGet(t testing.TB, url string, cookies []*http.Cookie) (int, []byte) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := httpClient(t, nil).Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// session is one logged-in user agent: the cookies the login answered.
type session struct {
	user    string
	node    string // node that handled the login
	cookies []*http.Cookie
}

// login posts /api/login on base and returns the session.
func login(t testing.TB, base, user string) session {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := httpClient(t, jar)
	resp, err := c.Post(base+"/api/login", "application/json", strings.NewReader(`{"name":"`+user+`"}`))
	if err != nil {
		t.Fatalf("login %s at %s: %v", user, base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login %s at %s: %d %s", user, base, resp.StatusCode, body)
	}
	var out struct{ User, Node string }
	if err := json.Unmarshal(body, &out); err != nil || out.User != user || out.Node == "" {
		t.Fatalf("login %s: body %s (%v)", user, body, err)
	}
	if len(resp.Cookies()) == 0 {
		t.Fatalf("login %s: no cookie", user)
	}
	return session{user: user, node: out.Node, cookies: resp.Cookies()}
}

// do sends a request with the session's cookies and returns status and
// body.
func (s session) do(t testing.TB, method, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.cookies {
		req.AddCookie(c)
	}
	resp, err := httpClient(t, nil).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// frame is one decoded server frame.
type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

// wsConn is a test WebSocket client: a reader goroutine decodes frames
// into a channel the test consumes.
type wsConn struct {
	t       testing.TB
	conn    *websocket.Conn
	welcome frame
	frames  chan frame
	done    chan struct{}

	mu       sync.Mutex
	closeErr error
}

// dialWS opens /ws on base with the session's cookies and reads the
// welcome frame. origin, when set, is sent as the Origin header.
func dialWS(t testing.TB, base string, s session, origin string) *wsConn {
	t.Helper()
	c, resp, err := tryDialWS(base, s, origin)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s/ws as %s: %v (status %d)", base, s.user, err, status)
	}
	w := &wsConn{t: t, conn: c, frames: make(chan frame, 10000), done: make(chan struct{})}
	go w.read()
	t.Cleanup(w.close)
	w.welcome = w.expect("welcome", 10*time.Second, nil)
	if w.welcome.str("user") != s.user {
		t.Fatalf("welcome for %s: %v", s.user, w.welcome)
	}
	return w
}

func tryDialWS(base string, s session, origin string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for _, c := range s.cookies {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	return d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", h)
}

func (w *wsConn) read() {
	defer close(w.done)
	defer close(w.frames)
	for {
		_, data, err := w.conn.ReadMessage()
		if err != nil {
			w.mu.Lock()
			w.closeErr = err
			w.mu.Unlock()
			return
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			w.mu.Lock()
			w.closeErr = fmt.Errorf("bad frame %q: %w", data, err)
			w.mu.Unlock()
			return
		}
		w.frames <- f
	}
}

func (w *wsConn) close() {
	_ = w.conn.Close()
	<-w.done
}

func (w *wsConn) send(v any) {
	w.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		w.t.Fatalf("send %s: %v", b, err)
	}
}

// expect returns the next frame of type typ matching match (nil matches
// any), dropping frames before it; it fails the test on timeout or when
// the connection ends.
func (w *wsConn) expect(typ string, timeout time.Duration, match func(frame) bool) frame {
	w.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case f, ok := <-w.frames:
			if !ok {
				w.mu.Lock()
				err := w.closeErr
				w.mu.Unlock()
				w.t.Fatalf("waiting for %q: connection ended: %v", typ, err)
			}
			if f.str("type") == "error" && typ != "error" {
				w.t.Logf("error frame while waiting for %q: %v", typ, f)
			}
			if f.str("type") == typ && (match == nil || match(f)) {
				return f
			}
		case <-timer.C:
			w.t.Fatalf("timed out after %v waiting for a %q frame", timeout, typ)
		}
	}
}

// join joins room and returns the joined frame.
func (w *wsConn) join(room string) frame {
	w.t.Helper()
	w.send(map[string]string{"type": "join", "room": room})
	return w.expect("joined", 10*time.Second, func(f frame) bool { return f.str("room") == room })
}

// joinUntil joins room until the joined frame's members satisfy ok,
// leaving and joining again in between: presence converges once every
// node has applied a membership change, which takes a moment after gossip
// has reported it. It fails the test with the last members on timeout.
func (w *wsConn) joinUntil(room string, timeout time.Duration, ok func([]string) bool) []string {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := members(w.join(room))
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("members of %s still %v after %v", room, m, timeout)
		}
		w.send(map[string]string{"type": "leave", "room": room})
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until every base answers /readyz with 200.
func waitReady(t testing.TB, timeout time.Duration, bases ...string) time.Duration {
	t.Helper()
	return waitFor(t, timeout, "/readyz 200 on "+strings.Join(bases, ", "), func() bool {
		for _, b := range bases {
			if st, _ := httpGet(t, b+"/readyz", nil); st != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// closed waits for the server to end the connection and returns the close
// code (0 if it ended without a close frame).
func (w *wsConn) closed(timeout time.Duration) int {
	w.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.frames:
			if ok {
				continue
			}
			w.mu.Lock()
			err := w.closeErr
			w.mu.Unlock()
			if ce, ok := err.(*websocket.CloseError); ok {
				return ce.Code
			}
			return 0
		case <-timer.C:
			w.t.Fatalf("connection still open after %v", timeout)
		}
	}
}

// sendRetry sends text to room until the sender's own copy comes back,
// resending after an "unavailable" error frame the way a client retries
// while the cluster re-routes a room. It returns how long that took.
func (w *wsConn) sendRetry(room, text string, timeout time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for attempt := 1; ; attempt++ {
		ref := "retry-" + itoa(attempt)
		w.send(map[string]string{"type": "send", "room": room, "text": text, "ref": ref})
		for {
			left := time.Until(deadline)
			if left <= 0 {
				w.t.Fatalf("%q to %s not accepted within %v (%d attempts)", text, room, timeout, attempt)
			}
			f := w.expectAny(left, func(f frame) bool {
				return (f.str("type") == "message" && f.str("ref") == ref) || (f.str("type") == "error" && f.str("ref") == ref)
			})
			if f.str("type") == "message" {
				return time.Since(start)
			}
			if f.str("code") != "unavailable" {
				w.t.Fatalf("send %q: %v", text, f)
			}
			break
		}
		time.Sleep(100 * time.Millisecond) // client back-off between retries
	}
}

// expectAny returns the next frame matching match, of any type.
func (w *wsConn) expectAny(timeout time.Duration, match func(frame) bool) frame {
	w.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var skipped []frame
	for {
		select {
		case f, ok := <-w.frames:
			if !ok {
				w.mu.Lock()
				err := w.closeErr
				w.mu.Unlock()
				w.t.Fatalf("connection ended: %v (skipped %v)", err, skipped)
			}
			if match(f) {
				return f
			}
			skipped = append(skipped, f)
		case <-timer.C:
			w.t.Fatalf("timed out after %v waiting for a frame; skipped %v", timeout, skipped)
		}
	}
}

func members(f frame) []string {
	raw, _ := f["members"].([]any)
	out := make([]string, 0, len(raw))
	for _, m := range raw {
		if s, ok := m.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clusterView is GET /api/cluster.
type clusterView struct {
	Node   string `json:"node"`
	Broker string `json:"broker"`
	Nodes  []struct {
		Name  string `json:"name"`
		HTTP  string `json:"http"`
		State string `json:"state"`
	} `json:"nodes"`
}

func getCluster(t testing.TB, base string) (clusterView, bool) {
	st, body := httpGet(t, base+"/api/cluster", nil)
	if st != http.StatusOK {
		return clusterView{}, false
	}
	var v clusterView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("/api/cluster: %v: %s", err, body)
	}
	return v, true
}

// stateOf is the state base reports for node name ("" when not listed).
func stateOf(t testing.TB, base, name string) string {
	v, ok := getCluster(t, base)
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

func itoa(i int) string { return strconv.Itoa(i) }

// redisKeys lists the keys matching pattern on the Redis at addr.
func redisKeys(t testing.TB, addr, pattern string) []string {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, pattern).Result()
	if err != nil {
		t.Fatalf("redis KEYS %s: %v", pattern, err)
	}
	return keys
}
