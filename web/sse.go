package web

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshchat/meshchat/chat"
)

// Server-Sent Events: GET /api/events streams a connection's server
// frames, one per event, to clients that cannot open a WebSocket; they
// post what they send to /api/send, /api/dm and /api/typing (post.go),
// on any node. The stream is a chat.Client like a WebSocket's, with the
// same bounded queue: a reader that falls behind is cut off and resumes
// from its last event id (ssepos.go).

// maxStreamRooms bounds the room parameters one request may name; the
// hub refuses rooms beyond its own limit with too_many_rooms frames.
const maxStreamRooms = 1000

// Refs of the requests a stream makes on its client's behalf: an error
// answering one is the stream's to handle (retried when transient).
const (
	refJoin = "sse-join:" // + room
	refDMs  = "sse-dms"
)

// retryBackoffCap bounds the wait before a stream's join or inbox
// request is tried again after the cluster could not serve it.
const retryBackoffCap = 5 * time.Second

// handleEvents serves GET /api/events?room=R&room=S.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	id, err := s.authenticate(r, true)
	if err != nil {
		authFailed(w, err, "log in first")
		return
	}
	q := r.URL.Query()
	rooms, code, msg := streamRooms(q["room"])
	if code != "" {
		writeError(w, http.StatusBadRequest, code, msg)
		return
	}
	resume := r.Header.Get("Last-Event-ID")
	if resume == "" {
		resume = q.Get("lastEventId")
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "node is shutting down")
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	client, err := s.hub.Connect(r.Context(), id.user, id.sid)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "chat is unavailable right now")
		return
	}
	st := &sseStream{
		s:     s,
		w:     w,
		rc:    http.NewResponseController(w),
		conn:  connOf(r.Context()),
		c:     client,
		names: rooms,
		pos:   parsePositions(resume, rooms),
		wake:  make(chan struct{}, 1),
		retry: make(chan retryReq, len(rooms)+1),
	}
	st.serve(r.Context())
}

// streamRooms validates and dedupes the room parameters.
func streamRooms(params []string) (rooms []string, code, msg string) {
	if len(params) > maxStreamRooms {
		return nil, chat.CodeTooManyRooms, "too many rooms"
	}
	seen := make(map[string]bool, len(params))
	for _, room := range params {
		if !chat.ValidName(room) {
			return nil, chat.CodeBadRoom, "invalid room name " + strconv.Quote(room)
		}
		if !seen[room] {
			seen[room] = true
			rooms = append(rooms, room)
		}
	}
	return rooms, "", ""
}

// sseStream is one events stream. The handler's goroutine writes
// (write); a second one makes the client's requests (control), which may
// wait on the cluster while frames flow.
type sseStream struct {
	s     *Server
	w     http.ResponseWriter
	rc    *http.ResponseController
	conn  net.Conn // the stream's connection (ConnContext); nil when unknown
	c     *chat.Client
	names []string
	pos   positions // the writer's
	wake  chan struct{}
	retry chan retryReq
	buf   []byte

	// mu nests outside the client's own lock (notified reads the close
	// reason under it); the client calls notified with its lock let go.
	mu      sync.Mutex
	hurried bool // the write deadline was cut short on disconnect
	reset   bool // the connection is to be reset (resetCut), not closed
	done    bool // the handler returned: w is not to be touched
}

// retryReq asks control to try a join (room) or the inbox request (room
// "") again, resuming after after.
type retryReq struct {
	room, after string
}

func (st *sseStream) serve(ctx context.Context) {
	h := st.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// nginx: pass events on at once, whatever proxy_buffering says.
	h.Set("X-Accel-Buffering", "no")
	st.w.WriteHeader(http.StatusOK)
	st.buf = append(st.buf[:0], "retry: 1000\n\n"...)
	ok := st.flush()

	ctx, cancel := context.WithCancel(ctx)
	var ctl sync.WaitGroup
	if ok {
		initial := st.pos.clone()
		st.c.SetNotify(st.notified)
		ctl.Add(1)
		go func() {
			defer ctl.Done()
			st.control(ctx, initial)
		}()
		st.write(ctx)
		st.mu.Lock()
		reset := st.reset
		st.mu.Unlock()
		if reset {
			st.abort()
		}
	}
	cancel()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = st.c.Close(cctx)
	ccancel()
	ctl.Wait()
	st.mu.Lock()
	st.done = true
	st.mu.Unlock()
}

// notified is the client's notify function: frames were queued or the
// hub disconnected the client. It never blocks.
func (st *sseStream) notified() {
	if st.c.Disconnected() {
		st.mu.Lock()
		if !st.hurried && !st.done {
			st.hurried = true
			// A write blocked on a slow reader must not hold the stream
			// for the whole WriteTimeout once the hub let go of it; nor
			// at all when the connection is reset (as a WebSocket's).
			grace := closeGrace
			if resetCut(st.c, st.conn) {
				st.reset = true
				grace = 0
			}
			_ = st.rc.SetWriteDeadline(time.Now().Add(grace))
		}
		st.mu.Unlock()
	}
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// control joins the stream's rooms and asks for the DM inbox, resuming
// after the positions the request named, then tries again what the
// cluster could not serve (the writer sees those errors).
func (st *sseStream) control(ctx context.Context, initial positions) {
	for _, room := range st.names {
		st.request(ctx, retryReq{room: room, after: initial.rooms[room]})
	}
	st.request(ctx, retryReq{after: initial.inbox})
	tries := map[string]int{}
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-st.retry:
			tries[req.room]++
			d := min(retryBackoffCap, 100*time.Millisecond<<min(tries[req.room], 6))
			t := time.NewTimer(d/2 + rand.N(d/2))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			st.request(ctx, req)
		}
	}
}

// request hands the client a join (or, for room "", a dms request).
func (st *sseStream) request(ctx context.Context, req retryReq) {
	f := struct {
		Type  string `json:"type"`
		Room  string `json:"room,omitempty"`
		After string `json:"after,omitempty"`
		Ref   string `json:"ref"`
	}{Type: "dms", Ref: refDMs, After: req.after}
	if req.room != "" {
		f.Type, f.Room, f.Ref = "join", req.room, refJoin+req.room
	}
	data, _ := json.Marshal(f) // strings only: cannot fail
	_ = st.c.Handle(ctx, data) // ErrClosed: the writer is ending
}

// write sends what the client queues until the client is disconnected,
// the peer goes, or a write fails; then, when it can, a close event.
func (st *sseStream) write(ctx context.Context) {
	s := st.s
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	for {
		if st.c.Disconnected() {
			code, reason := st.c.CloseReason()
			batch = st.c.Drain(batch[:0])
			if code != chat.CloseSlowConsumer {
				// A slow reader's backlog is dropped: the close
				// event, telling it to resume, comes first.
				st.frames(batch)
			}
			st.mu.Lock()
			reset := st.reset
			st.mu.Unlock()
			if reset {
				return // serve resets the connection
			}
			st.closeEvent(code, reason)
			if !st.flush() {
				st.mu.Lock()
				st.reset = true // the close could not go out
				st.mu.Unlock()
			}
			return
		}
		batch = st.c.Drain(batch[:0])
		if len(batch) > 0 {
			st.frames(batch)
			clear(batch)
			if !st.flush() {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-st.wake:
		case <-ping.C:
			// Keeps proxies from timing the stream out, and shows the
			// client (which hears nothing of SSE comments) that the
			// stream is alive.
			st.buf = append(st.buf, "data: {\"type\":\"keepalive\"}\n\n"...)
			if !st.flush() {
				return
			}
		}
	}
}

// frames appends batch to the buffer as events, each with the resume
// point as its id when it moved. Errors answering the stream's own
// transient requests are not shown: the requests are retried.
func (st *sseStream) frames(batch [][]byte) {
	for _, f := range batch {
		sf, ok := inspect(f)
		if ok && sf.Type == "error" && st.retried(sf) {
			continue
		}
		if ok && st.pos.update(sf) {
			st.buf = append(st.buf, "id: "...)
			st.buf = append(st.buf, st.pos.String()...)
			st.buf = append(st.buf, '\n')
		}
		st.buf = append(st.buf, "data: "...)
		st.buf = append(st.buf, f...)
		st.buf = append(st.buf, "\n\n"...)
	}
}

// retried reports whether error frame f answers one of the stream's own
// requests with a transient error, and has control try it again.
func (st *sseStream) retried(f streamFrame) bool {
	if f.Code != chat.CodeUnavailable && f.Code != chat.CodeRateLimited {
		return false
	}
	var req retryReq
	switch {
	case f.Ref == refDMs:
		req.after = st.pos.inbox
	case strings.HasPrefix(f.Ref, refJoin):
		req.room = f.Ref[len(refJoin):]
		req.after = st.pos.rooms[req.room]
	default:
		return false
	}
	select {
	case st.retry <- req:
	default:
		// One request per room and one for the inbox are ever
		// outstanding, and retry holds that many.
	}
	return true
}

// closeEvent appends the stream's last event: why it ends, with the
// WebSocket close code the same cause has there.
func (st *sseStream) closeEvent(code int, reason string) {
	data, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{"close", code, reason})
	st.buf = append(st.buf, "data: "...)
	st.buf = append(st.buf, data...)
	st.buf = append(st.buf, "\n\n"...)
}

// abort resets the stream's connection (abortConn) at once: the server
// finds it closed when the handler returns.
func (st *sseStream) abort() {
	if st.conn != nil {
		abortConn(st.conn)
		_ = st.conn.Close()
	}
}

// flush writes the buffer and flushes it through to the peer, under a
// fresh write deadline unless the client was disconnected (then the
// short one notified set stands). False means the stream is broken.
func (st *sseStream) flush() bool {
	if len(st.buf) == 0 {
		return true
	}
	st.mu.Lock()
	if !st.hurried {
		_ = st.rc.SetWriteDeadline(time.Now().Add(st.s.cfg.WriteTimeout))
	}
	st.mu.Unlock()
	_, err := st.w.Write(st.buf)
	if err == nil {
		err = st.rc.Flush()
	}
	if cap(st.buf) > 64<<10 {
		st.buf = nil // grown by a burst: let it go
	} else {
		st.buf = st.buf[:0]
	}
	return err == nil
}
