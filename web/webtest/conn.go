package webtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a test client of /ws, or of an events stream (Events): a
// reader goroutine decodes frames into a buffered channel that the test
// consumes with deadlines.
type Conn struct {
	tb      testing.TB
	ws      *websocket.Conn // nil for an events stream
	body    io.ReadCloser   // an events stream's; nil for a WebSocket
	sock    *pausable       // nil when Wrap was given a connection TryDial did not open
	Welcome Frame           // the first frame, read by Dial
	frames  chan Frame
	done    chan struct{} // closed once the reader has set closeErr
	mu      sync.Mutex    // serializes writes

	closeErr error // why the connection ended
}

// Wrap starts reading frames from an open connection. The connection is
// closed when the test ends.
func Wrap(tb testing.TB, ws *websocket.Conn) *Conn {
	c := &Conn{tb: tb, ws: ws, frames: make(chan Frame, 10000), done: make(chan struct{})}
	c.sock, _ = ws.UnderlyingConn().(*pausable)
	go c.read(c.readFrames)
	tb.Cleanup(c.Close)
	return c
}

// read decodes frames with readFrames until the connection ends. Setting
// closeErr before closing done, and done before frames, lets whoever
// sees either closed read closeErr.
func (c *Conn) read(readFrames func() error) {
	c.closeErr = readFrames()
	close(c.done)
	close(c.frames)
}

func (c *Conn) readFrames() error {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("bad frame %q: %w", data, err)
		}
		c.frames <- f
	}
}

// Err is why the connection ended, or nil while it is open.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.closeErr
	default:
		return nil
	}
}

// Close closes the connection and waits for the reader. Safe to call more
// than once.
func (c *Conn) Close() {
	if c.ws != nil {
		_ = c.ws.Close()
	} else {
		_ = c.body.Close()
	}
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
