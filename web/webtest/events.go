package webtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// EventIDKey is the key under which a Frame read from an events stream
// holds the id of its event (absent when the event had none). No server
// frame has a field of that name.
const EventIDKey = "\x00event-id"

// EventID is the id of the event that carried f, or "".
func (f Frame) EventID() string { return f.Str(EventIDKey) }

// EventsOptions shape an events stream beyond the session's cookies.
type EventsOptions struct {
	Rooms []string
	// LastEventID resumes the stream after it, sent as the Last-Event-ID
	// header or, with InQuery, as ?lastEventId=.
	LastEventID string
	InQuery     bool
	// Token authenticates with ?token= instead of the cookies.
	Token bool
	// Dial: Origin, Header, NetDial and ReadBuffer are used; Query is
	// appended to the stream's own.
	Dial DialOptions
}

// Events opens GET /api/events on base as the session, reads the welcome
// frame, which must come first, and returns the stream as a Conn: the
// test reads its frames as a WebSocket's (Expect, Next, Closed, Pause),
// and each frame's EventID. It is closed when the test ends.
func Events(tb testing.TB, base string, s Session, o EventsOptions) *Conn {
	tb.Helper()
	resp, sock, err := tryEvents(tb, base, s, o)
	if err != nil {
		tb.Fatalf("events %s as %s: %v", base, s.User, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tb.Fatalf("events %s as %s: %d %s", base, s.User, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		tb.Fatalf("events: Content-Type %q", ct)
	}
	c := &Conn{tb: tb, body: resp.Body, frames: make(chan Frame, 10000), done: make(chan struct{})}
	c.sock = sock
	go c.read(c.readEvents)
	tb.Cleanup(c.Close)
	c.Welcome = c.ExpectNext("welcome", 10*time.Second)
	if s.User != "" && c.Welcome.Str("user") != s.User {
		tb.Fatalf("welcome for %s: %v", s.User, c.Welcome)
	}
	return c
}

// TryEvents sends the request of an events stream and returns the
// response, whatever its status; the caller closes its body.
func TryEvents(tb testing.TB, base string, s Session, o EventsOptions) (*http.Response, error) {
	resp, _, err := tryEvents(tb, base, s, o)
	return resp, err
}

func tryEvents(tb testing.TB, base string, s Session, o EventsOptions) (*http.Response, *pausable, error) {
	q := url.Values{}
	for _, r := range o.Rooms {
		q.Add("room", r)
	}
	if o.LastEventID != "" && o.InQuery {
		q.Set("lastEventId", o.LastEventID)
	}
	if o.Token {
		q.Set("token", s.Token)
	}
	u := base + "/api/events?" + q.Encode()
	if o.Dial.Query != "" {
		u += "&" + o.Dial.Query
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range o.Dial.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	if !o.Token {
		for _, c := range s.Cookies {
			req.AddCookie(c)
		}
	}
	if o.Dial.Origin != "" {
		req.Header.Set("Origin", o.Dial.Origin)
	}
	if o.LastEventID != "" && !o.InQuery {
		req.Header.Set("Last-Event-ID", o.LastEventID)
	}
	// The socket is one that Pause can stop, as a WebSocket's is.
	var sock *pausable
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := o.Dial.dial(ctx, network, addr)
			sock, _ = conn.(*pausable)
			return conn, err
		},
	}
	tb.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	return resp, sock, err
}

// readEvents reads the stream's frames into the connection.
func (c *Conn) readEvents() error {
	return ReadEvents(c.body, func(f Frame) { c.frames <- f })
}

// ReadEvents decodes an event stream from r until it ends, handing each
// frame to emit: "data:" lines make a frame, "id:" its EventID. A
// "close" frame (the stream's last) becomes the error returned, a
// *websocket.CloseError as a WebSocket close frame does; a stream that
// just ends is io.EOF.
func ReadEvents(r io.Reader, emit func(Frame)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var data bytes.Buffer
	id := ""
	var closeErr error
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var f Frame
			if err := json.Unmarshal(data.Bytes(), &f); err != nil {
				return fmt.Errorf("bad event data %q: %w", data.Bytes(), err)
			}
			data.Reset()
			if id != "" {
				f[EventIDKey] = id
				id = ""
			}
			if f.Type() == "close" {
				closeErr = &websocket.CloseError{Code: int(f.Int("code")), Text: f.Str("reason")}
			}
			emit(f)
		case field == "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		case field == "id":
			id = value
		}
	}
	if closeErr != nil {
		return closeErr
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}

// Post sends a one-shot request as the session (path "/api/send",
// "/api/dm", "/api/typing") with body as JSON, and returns the status and
// the answer decoded (the acknowledging frame, or an error body), nil
// when there is none.
func (s Session) Post(tb testing.TB, base, path string, body any) (int, Frame) {
	tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		tb.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, c := range s.Cookies {
		req.AddCookie(c)
	}
	resp, err := Client(tb, nil).Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var f Frame
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &f); err != nil {
			tb.Fatalf("POST %s: %d %q: %v", path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, f
}

// ErrorCode is the code of a JSON error body, or "".
func (f Frame) ErrorCode() string {
	e, _ := f["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
