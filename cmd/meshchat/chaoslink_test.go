package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/web/webtest"
)

// chaosLink is one connection of a chaos client: a WebSocket, or an
// events stream (GET /api/events) with its sends posted to /api/send on
// the stream's node, as the browser client's fallback does.
type chaosLink interface {
	// read hands the connection's frames to emit until it ends, and
	// returns why (a *websocket.CloseError for a close frame or event).
	read(emit func(webtest.Frame)) error
	// write sends the client frames out; false ends the connection.
	write(out []any) bool
	// close ends the connection; safe to call twice and concurrently.
	close()
}

// errUndecodable wraps a frame that is not JSON; the connection goes on.
var errUndecodable = errors.New("undecodable frame")

// wsLink is a WebSocket.
type wsLink struct {
	ws *websocket.Conn
	c  *chaosClient
}

func (l *wsLink) read(emit func(webtest.Frame)) error {
	for {
		l.c.stallPoint()
		_, data, err := l.ws.ReadMessage()
		if err != nil {
			return err
		}
		var f webtest.Frame
		if err := json.Unmarshal(data, &f); err != nil {
			l.c.mu.Lock()
			l.c.problemf("undecodable frame %q", data)
			l.c.mu.Unlock()
			continue
		}
		emit(f)
	}
}

func (l *wsLink) write(out []any) bool {
	for _, v := range out {
		_ = l.ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := l.ws.WriteJSON(v); err != nil {
			return false
		}
	}
	return true
}

func (l *wsLink) close() { _ = l.ws.Close() }

// sseLink is an events stream. Its sends go out as one-shot posts, each
// on a goroutine of its own (tracked by the client), answered by the
// message's id or an error; join frames cannot be sent on a stream (it
// joins by itself), so one ends the stream and the client reconnects.
type sseLink struct {
	c      *chaosClient
	base   string
	connID int
	body   io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

// dialEvents opens the events stream on base for the client's rooms,
// resuming after resume (the id of the last event that had one).
func (c *chaosClient) dialEvents(ctx context.Context, base, resume string, connID int) (*sseLink, int, error) {
	q := url.Values{}
	for _, r := range c.rooms {
		q.Add("room", r)
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events?"+q.Encode(), nil)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if resume != "" {
		req.Header.Set("Last-Event-ID", resume)
	}
	for _, ck := range c.sess.Cookies {
		req.AddCookie(ck)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, fmt.Errorf("events: %d %s", resp.StatusCode, b)
	}
	return &sseLink{c: c, base: base, connID: connID, body: resp.Body, cancel: cancel}, 0, nil
}

// httpClient is the client's own HTTP client for streams and posts: a
// dead node fails a dial, or a handshake held too long, as a WebSocket
// dial does.
func (c *chaosClient) httpClient() *http.Client {
	c.httpOnce.Do(func() {
		c.http = &http.Client{Transport: &http.Transport{
			DialContext:           c.dialer().DialContext,
			ResponseHeaderTimeout: chaosConnectTimeout,
			MaxIdleConnsPerHost:   4,
		}}
	})
	return c.http
}

func (l *sseLink) read(emit func(webtest.Frame)) error {
	return webtest.ReadEvents(stallReader{l.c, l.body}, emit)
}

// stallReader pauses reads while the client stalls, as a slow reader.
type stallReader struct {
	c *chaosClient
	r io.Reader
}

func (s stallReader) Read(p []byte) (int, error) {
	s.c.stallPoint()
	return s.r.Read(p)
}

func (l *sseLink) write(out []any) bool {
	for _, v := range out {
		f, _ := v.(map[string]string)
		switch f["type"] {
		case "send":
			l.c.posts.Go(func() { l.c.post(l.base, l.connID, f) })
		default:
			l.c.mu.Lock()
			l.c.eventf("a %s request cannot go on an events stream: reconnecting", f["type"])
			l.c.mu.Unlock()
			return false
		}
	}
	return true
}

func (l *sseLink) close() {
	l.once.Do(func() {
		l.cancel()
		_ = l.body.Close()
	})
}

// post sends f (a send frame) as POST /api/send on base and applies the
// answer: the id acknowledges the send; a transient error, or no answer,
// has it sent again after a back-off (on the node of the live stream).
func (c *chaosClient) post(base string, connID int, f map[string]string) {
	body, _ := json.Marshal(map[string]string{"room": f["room"], "text": f["text"], "ref": f["ref"]})
	ctx, cancel := context.WithTimeout(context.Background(), chaosAckTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/send", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for _, ck := range c.sess.Cookies {
		req.AddCookie(ck)
	}
	var ans struct {
		ID    string `json:"id"`
		Error struct{ Code, Message string }
	}
	status := 0
	resp, err := c.httpClient().Do(req)
	if err == nil {
		status = resp.StatusCode
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans)
		resp.Body.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ref := f["ref"]
	now := time.Now()
	switch {
	case err == nil && status == http.StatusOK && ans.ID != "":
		c.ackLocked(ref, ans.ID, f["room"], f["text"])
		return
	case err == nil && (ans.Error.Code == "unavailable" || ans.Error.Code == "rate_limited"):
		if ans.Error.Code == "unavailable" {
			c.unavailable++
		} else {
			c.rateLimited++
		}
	case err == nil:
		c.problemf("post %s answered %d %+v", ref, status, ans)
		delete(c.pending, ref)
		return
	default:
		c.eventf("post %s to %s failed: %v", ref, base, err)
	}
	if p := c.pending[ref]; p != nil && p.conn == connID {
		p.tries++
		p.due = now.Add(randDur(min(chaosBackoffCap, 250*time.Millisecond<<p.tries)))
	}
}

// wsURL is base's WebSocket URL.
func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/ws" }
