package webtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a test WebSocket client of /ws: a reader goroutine decodes
// frames into a buffered channel that the test consumes with deadlines.
type Conn struct {
	tb      testing.TB
	ws      *websocket.Conn
	sock    *pausable // nil when Wrap was given a connection TryDial did not open
	Welcome Frame     // the first frame, read by Dial
	frames  chan Frame
	done    chan struct{}

	mu       sync.Mutex // guards closeErr and writes
	closeErr error
}

// DialOptions shape a dial beyond the session's cookies.
type DialOptions struct {
	Origin string      // sent as the Origin header when set
	Query  string      // appended to /ws, without "?"
	Header http.Header // more request headers
	// NetDial, when set, opens the TCP connection.
	NetDial func(network, addr string) (net.Conn, error)
	// ReadBuffer, when positive, fixes the socket's receive buffer in
	// bytes. Left to autotuning, a loopback socket grows to tens of
	// megabytes, and a client that stops reading (Pause) would take that
	// long to look slow to the server.
	ReadBuffer int
	// OnPing, when set, is called with each ping the server sends, before
	// the pong that answers it.
	OnPing func(data string)
}

// Dial opens /ws on base with the session's cookies, reads the welcome
// frame, which must come first, and checks that it names the session's
// user. The connection is closed when the test ends.
func Dial(tb testing.TB, base string, s Session, o DialOptions) *Conn {
	tb.Helper()
	ws, resp, err := TryDial(base, s, o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s/ws as %s: %v (status %d)", base, s.User, err, status)
	}
	c := Wrap(tb, ws)
	c.Welcome = c.ExpectNext("welcome", 10*time.Second)
	if s.User != "" && c.Welcome.Str("user") != s.User {
		tb.Fatalf("welcome for %s: %v", s.User, c.Welcome)
	}
	return c
}

// TryDial opens /ws on base and returns the raw connection, or the
// handshake's error and response: for tests of refused upgrades.
func TryDial(base string, s Session, o DialOptions) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	for _, c := range s.Cookies {
		h.Add("Cookie", c.Name+"="+c.Value)
	}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: o.dial}
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	if o.Query != "" {
		u += "?" + o.Query
	}
	ws, resp, err := d.Dial(u, h)
	if err == nil && o.OnPing != nil {
		ws.SetPingHandler(func(data string) error {
			o.OnPing(data)
			return pong(ws, data)
		})
	}
	return ws, resp, err
}

// dial opens the TCP connection as o asks, in a socket that Pause can
// stop.
func (o DialOptions) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	var err error
	if o.NetDial != nil {
		conn, err = o.NetDial(network, addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	if o.ReadBuffer > 0 {
		tc, ok := conn.(*net.TCPConn)
		if !ok {
			conn.Close()
			return nil, fmt.Errorf("read buffer: %T is not a TCP connection", conn)
		}
		if err := tc.SetReadBuffer(o.ReadBuffer); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return &pausable{Conn: conn}, nil
}

// pong answers a ping the way gorilla's default handler does: a pong
// that cannot be written because the connection is going is no error.
func pong(ws *websocket.Conn, data string) error {
	err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	var ne net.Error
	if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
		return nil
	}
	return err
}

// Wrap starts reading frames from an open connection. The connection is
// closed when the test ends.
func Wrap(tb testing.TB, ws *websocket.Conn) *Conn {
	c := &Conn{tb: tb, ws: ws, frames: make(chan Frame, 10000), done: make(chan struct{})}
	c.sock, _ = ws.UnderlyingConn().(*pausable)
	go c.read()
	tb.Cleanup(c.Close)
	return c
}

func (c *Conn) read() {
	defer close(c.done)
	defer close(c.frames)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.setErr(err)
			return
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			c.setErr(fmt.Errorf("bad frame %q: %w", data, err))
			return
		}
		c.frames <- f
	}
}

func (c *Conn) setErr(err error) {
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
}

// Err is why the connection ended, once it has.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Close closes the connection and waits for the reader. Safe to call more
// than once.
func (c *Conn) Close() {
	_ = c.ws.Close()
	<-c.done
}

// Raw is the underlying connection, for tests that write malformed frames.
func (c *Conn) Raw() *websocket.Conn { return c.ws }

// Send writes v as one JSON text frame; a string or []byte is sent as is.
func (c *Conn) Send(v any) {
	c.tb.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.tb.Fatal(err)
		}
	}
	if err := c.TrySend(b); err != nil {
		c.tb.Fatalf("send %s: %v", b, err)
	}
}

// TrySend writes one text frame and returns the error.
func (c *Conn) TrySend(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// Next returns the next frame, failing the test on timeout or when the
// connection ends.
func (c *Conn) Next(timeout time.Duration) Frame {
	c.tb.Helper()
	f, ok := c.TryNext(timeout)
	if !ok {
		if err := c.Err(); err != nil {
			c.tb.Fatalf("connection ended: %v", err)
		}
		c.tb.Fatalf("no frame within %v", timeout)
	}
	return f
}

// TryNext returns the next frame, or false on timeout or when the
// connection has ended.
func (c *Conn) TryNext(timeout time.Duration) (Frame, bool) {
	f, err := c.scan(timeout, func(Frame) bool { return true })
	return f, err == nil
}

// ExpectNext returns the next frame and fails the test unless it is of
// type typ: for tests that assert that nothing comes before it.
func (c *Conn) ExpectNext(typ string, timeout time.Duration) Frame {
	c.tb.Helper()
	f := c.Next(timeout)
	if f.Type() != typ {
		c.tb.Fatalf("got %v, want a %q frame next", f, typ)
	}
	return f
}

// Expect returns the next frame of type typ matching match (nil matches
// any), dropping frames before it; it fails the test on timeout or when
// the connection ends.
func (c *Conn) Expect(typ string, timeout time.Duration, match func(Frame) bool) Frame {
	c.tb.Helper()
	return c.until(fmt.Sprintf("a %q frame", typ), timeout, func(f Frame) bool {
		if f.Type() == "error" && typ != "error" {
			c.tb.Logf("error frame while waiting for %q: %v", typ, f)
		}
		return f.Type() == typ && (match == nil || match(f))
	})
}

// ExpectAny returns the next frame matching match, of any type.
func (c *Conn) ExpectAny(timeout time.Duration, match func(Frame) bool) Frame {
	c.tb.Helper()
	return c.until("a frame", timeout, match)
}

func (c *Conn) until(what string, timeout time.Duration, match func(Frame) bool) Frame {
	c.tb.Helper()
	var skipped []string
	f, err := c.scan(timeout, func(f Frame) bool {
		if match(f) {
			return true
		}
		skipped = append(skipped, f.Type())
		return false
	})
	switch err {
	case errEnded:
		c.tb.Fatalf("waiting for %s: connection ended: %v (skipped %v)", what, c.Err(), limit(skipped))
	case errTimedOut:
		c.tb.Fatalf("timed out after %v waiting for %s; skipped %v", timeout, what, limit(skipped))
	}
	return f
}

var (
	errEnded    = errors.New("connection ended")
	errTimedOut = errors.New("timed out")
)

// scan consumes frames until stop returns true for one, which it
// returns; or until the connection ends (errEnded) or timeout passes
// (errTimedOut).
func (c *Conn) scan(timeout time.Duration, stop func(Frame) bool) (Frame, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return nil, errEnded
			}
			if stop(f) {
				return f, nil
			}
		case <-timer.C:
			return nil, errTimedOut
		}
	}
}

func limit(s []string) []string {
	if len(s) > 20 {
		return append(s[:20:20], "...")
	}
	return s
}

// Quiet fails the test if a frame matching match arrives within d.
func (c *Conn) Quiet(d time.Duration, what string, match func(Frame) bool) {
	c.tb.Helper()
	if f, err := c.scan(d, match); err == nil {
		c.tb.Fatalf("unexpected %s: %v", what, f)
	}
}

// Join joins room and returns the joined frame.
func (c *Conn) Join(room string) Frame {
	c.tb.Helper()
	return c.JoinAfter(room, "")
}

// JoinAfter joins room resuming after the message with id after (none
// when ""), and returns the joined frame: its history is what came
// after that message.
func (c *Conn) JoinAfter(room, after string) Frame {
	c.tb.Helper()
	join := map[string]string{"type": "join", "room": room}
	if after != "" {
		join["after"] = after
	}
	c.Send(join)
	return c.Expect("joined", 10*time.Second, func(f Frame) bool { return f.Str("room") == room })
}

// JoinUntil joins room until the joined frame's members satisfy ok,
// leaving and joining again in between: presence converges once every
// node has applied a membership change, which takes a moment after gossip
// has reported it. It fails the test with the last members on timeout.
func (c *Conn) JoinUntil(room string, timeout time.Duration, ok func([]string) bool) []string {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := c.Join(room).Members()
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("members of %s still %v after %v", room, m, timeout)
		}
		c.Send(map[string]string{"type": "leave", "room": room})
		time.Sleep(50 * time.Millisecond)
	}
}

// Closed waits for the server to end the connection and returns the close
// code (0 if it ended without a close frame). It resumes a paused
// connection: the close frame is read like any other.
func (c *Conn) Closed(timeout time.Duration) int {
	c.tb.Helper()
	c.Resume()
	if _, err := c.scan(timeout, func(Frame) bool { return false }); err == errTimedOut {
		c.tb.Fatalf("connection still open after %v", timeout)
	}
	var ce *websocket.CloseError
	if errors.As(c.Err(), &ce) {
		return ce.Code
	}
	return 0
}

// SendRetry sends text to room until the sender's own copy comes back,
// resending after an "unavailable" error frame the way a client retries
// while the cluster re-routes a room. It returns how long that took.
func (c *Conn) SendRetry(room, text string, timeout time.Duration) time.Duration {
	c.tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for attempt := 1; ; attempt++ {
		ref := "retry-" + strconv.Itoa(attempt)
		c.Send(map[string]string{"type": "send", "room": room, "text": text, "ref": ref})
		left := time.Until(deadline)
		if left <= 0 {
			c.tb.Fatalf("%q to %s not accepted within %v (%d attempts)", text, room, timeout, attempt)
		}
		f := c.ExpectAny(left, func(f Frame) bool {
			return (f.Type() == "message" || f.Type() == "error") && f.Str("ref") == ref
		})
		if f.Type() == "message" {
			return time.Since(start)
		}
		if f.Str("code") != "unavailable" {
			c.tb.Fatalf("send %q: %v", text, f)
		}
		time.Sleep(100 * time.Millisecond) // client back-off between retries
	}
}
