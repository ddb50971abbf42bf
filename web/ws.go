package web

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/chat"
)

// errReset: the connection is reset (resetCut); no close frame goes out.
var errReset = errors.New("web: connection reset")

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	id, err := s.authenticate(r, true)
	if err != nil {
		authFailed(w, err, "log in first")
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "WebSocket upgrade required")
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "node is shutting down")
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	client, err := s.hub.Connect(r.Context(), id.user, id.sid)
	if err != nil {
		s.wg.Done()
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "chat is unavailable right now")
		return
	}
	cw := &corkingWriter{ResponseWriter: w, pool: &s.corks}
	conn, err := s.upgrader.Upgrade(cw, r, nil)
	if err != nil {
		// The upgrader has answered the request.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = client.Close(ctx)
		cancel()
		s.wg.Done()
		return
	}
	s.mu.Lock()
	s.conns[conn] = struct{}{}
	s.mu.Unlock()
	// The connection gets goroutines of its own and this handler returns:
	// net/http then lets go of what it keeps per request for as long as
	// its handler runs (its 4 KiB read and write buffers, the response
	// and request, and a deep stack), several KiB per idle connection.
	s.logSession("connect", "user", id.user, "addr", clientAddr(r))
	wc := &wsConn{s: s, conn: conn, cork: cw.conn, br: cw.br, c: client}
	wc.start()
}

// wsConn is one WebSocket connection. An idle connection costs one
// goroutine with a small stack and no other:
//
//   - The reader waits for bytes in park, a few frames deep, on a fresh
//     goroutine whose stack never grew. When bytes arrive that goroutine
//     reads and handles frames (read: gorilla, JSON, the hub; its stack
//     grows), and once nothing is buffered it starts a fresh park
//     goroutine and exits. So at most one goroutine reads at a time, and
//     the handover (a go statement) orders their work. A pong alone
//     (the answer to our keepalive ping) is consumed in park itself:
//     through gorilla it would leave the reader parked deep inside
//     gorilla until the next message.
//   - A writer runs only while there is something to write (frames
//     queued, a ping due, the close frame). kick starts one, on a
//     goroutine of the server's writer pool (writers), unless one is
//     running, and then only marks that there is more (again); a writer
//     stops only after finding nothing left under mu, and its goroutine
//     goes back to the pool. Once finished is set no writer starts
//     again.
//   - The ping is a runtime timer (time.AfterFunc), not a goroutine.
//
// When the reader ends, writing stops and the connection is torn down
// (end); when writing ends (client disconnected by the hub, write error)
// the reader gets closeGrace to read the peer's close frame before the
// socket closes.
type wsConn struct {
	s    *Server
	conn *websocket.Conn
	cork *corkConn
	br   *bufio.Reader // gorilla's read buffer; nil: gorilla has its own
	c    *chat.Client
	ping *time.Timer

	mu       sync.Mutex
	hurried  bool          // the write deadline was cut short on disconnect
	running  bool          // a writer goroutine is running
	again    bool          // kicked while running: look once more
	pingDue  bool          // the ping timer fired
	finished bool          // writing is over: nothing starts a writer
	exited   chan struct{} // made by a reader waiting for the writer
	ending   bool          // the writer is done: the read deadline is final
	reset    bool          // the connection is reset, not closed (resetCut, or the close could not go out)
	renewAt  time.Time     // when the write deadline is due for renewal; writer only
}

func (w *wsConn) start() {
	s, c := w.s, w.c
	w.conn.SetReadLimit(s.cfg.HardFrameBytes)
	w.extendRead()
	w.conn.SetPongHandler(func(string) error {
		w.extendRead()
		return nil
	})
	w.mu.Lock()
	w.ping = time.AfterFunc(s.cfg.PingInterval, w.pingTick)
	w.mu.Unlock()
	c.SetNotify(w.notified)
	if w.br == nil {
		go w.read()
		return
	}
	go w.park()
}

// park waits for the next bytes from the peer. Its goroutine is fresh, so
// its stack is as small as the runtime makes a new one.
func (w *wsConn) park() {
	for {
		if _, err := w.br.Peek(1); err != nil {
			// Closed, failed, or quiet for PongTimeout. (bufio hands an
			// error out once: gorilla would not see it.)
			w.end()
			return
		}
		if !w.skipPong() {
			break
		}
	}
	w.read()
}

// skipPong consumes a complete, well-formed pong at the head of the read
// buffer and reports whether it did. Only the reader calls it, between
// messages (gorilla has read the previous one to its end).
func (w *wsConn) skipPong() bool {
	b, _ := w.br.Peek(w.br.Buffered())
	// FIN and opcode 0xA; masked (every client frame is); payload of at
	// most 125 bytes, as control frames have. Anything else is gorilla's.
	if len(b) < 6 || b[0] != 0x8A || b[1]&0x80 == 0 || b[1]&0x7F > 125 {
		return false
	}
	n := 6 + int(b[1]&0x7F)
	if len(b) < n {
		return false
	}
	_, _ = w.br.Discard(n)
	w.extendRead()
	return true
}

// read handles frames while bytes are buffered, then hands waiting over
// to a fresh park goroutine.
func (w *wsConn) read() {
	for {
		if w.br != nil {
			for w.skipPong() {
			}
			if w.br.Buffered() == 0 {
				go w.park()
				return
			}
		}
		mt, rd, err := w.conn.NextReader()
		if err == nil {
			w.extendRead()
			err = w.s.readFrame(w.s.ctx, w.c, mt, rd)
		}
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				w.discardRest()
			}
			w.end()
			return
		}
	}
}

// discardRest reads and drops what the peer still sends after a frame
// over the hard cap (which gorilla has answered with close 1009, when it
// could still write), until the peer closes or goes quiet for
// lingerQuiet, closeGrace passes, or lingerBytes are dropped. Closing a
// socket with unread bytes makes TCP reset the connection, and the reset
// can destroy the close frame before the peer reads it, or fail the
// peer's write of the rest of its frame: the client would see a broken
// connection instead of the reason. (A browser answers the close frame
// and then waits for the server to close: the quiet period ends that.)
func (w *wsConn) discardRest() {
	w.mu.Lock()
	w.ending = true // nothing else moves the read deadline from now on
	w.mu.Unlock()
	nc := w.conn.NetConn()
	end := time.Now().Add(closeGrace)
	buf := make([]byte, 4<<10)
	for dropped := 0; dropped < lingerBytes; {
		dl := time.Now().Add(lingerQuiet)
		if dl.After(end) {
			dl = end
		}
		_ = nc.SetReadDeadline(dl)
		n, err := nc.Read(buf)
		dropped += n
		if err != nil {
			return // closed, reset, quiet or out of time
		}
	}
}

// end tears the connection down once the reader has ended: it stops
// writing, waits for a running writer, closes the socket and the client.
func (w *wsConn) end() {
	s := w.s
	w.mu.Lock()
	w.finished = true // before Stop: a tick running now must not re-arm it
	var exited chan struct{}
	if w.running {
		exited = make(chan struct{})
		w.exited = exited
	}
	w.mu.Unlock()
	w.ping.Stop()
	_ = w.conn.Close() // unblocks a writer stuck on a full socket
	if exited != nil {
		<-exited
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = w.c.Close(cctx)
	ccancel()
	code, reason := w.c.CloseReason()
	s.logSession("disconnect", "user", w.c.User(), "code", code, "reason", reason)
	s.mu.Lock()
	delete(s.conns, w.conn)
	s.mu.Unlock()
	s.wg.Done()
}

// pingTick runs on the timer's own goroutine every PingInterval.
func (w *wsConn) pingTick() {
	w.mu.Lock()
	if w.finished {
		w.mu.Unlock()
		return
	}
	w.pingDue = true
	w.ping.Reset(w.s.cfg.PingInterval)
	w.mu.Unlock()
	w.kick()
}

// notified is the client's notify function: frames were queued or the
// hub disconnected the client.
func (w *wsConn) notified() {
	if w.c.Disconnected() {
		w.mu.Lock()
		hurry := !w.hurried
		w.hurried = true
		w.mu.Unlock()
		if hurry {
			// A write blocked on a full socket (the usual state of a
			// slow consumer) must not hold the connection for the
			// whole WriteTimeout once the hub has let go of the client;
			// nor at all when the connection is reset.
			grace := closeGrace
			if resetCut(w.c, w.cork) {
				w.mu.Lock()
				w.reset = true
				w.mu.Unlock()
				grace = 0
			}
			_ = w.cork.SetWriteDeadline(time.Now().Add(grace))
		}
	}
	w.kick()
}

// kick makes sure a writer looks at the connection: it starts one, or
// tells the running one to look again. It never blocks; the hub calls it
// from its fan-out.
func (w *wsConn) kick() {
	w.mu.Lock()
	switch {
	case w.finished:
	case w.running:
		w.again = true
	default:
		w.running = true
		w.again = false
		w.s.writers.run(w)
	}
	w.mu.Unlock()
}

// write is the writer goroutine: it writes until nothing is left.
func (w *wsConn) write() {
	for {
		if !w.writeOnce() {
			w.finish()
			return
		}
		w.mu.Lock()
		if !w.again || w.finished {
			w.running = false
			if w.exited != nil {
				close(w.exited)
			}
			w.mu.Unlock()
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}

// finish ends writing for good and gives the reader closeGrace to read
// the peer's answer to our close frame (or see the broken socket). A
// connection being reset (a slow consumer's with a backlogged socket,
// see resetCut, or one whose close could not go out) has no answer to
// wait for: it ends now.
func (w *wsConn) finish() {
	w.mu.Lock()
	w.finished = true
	w.running = false
	if !w.ending { // else the reader is draining on its own deadline
		w.ending = true
		grace := closeGrace
		if w.reset {
			abortConn(w.cork)
			grace = 0
		}
		_ = w.conn.SetReadDeadline(time.Now().Add(grace))
	}
	if w.exited != nil {
		close(w.exited)
	}
	w.mu.Unlock()
}

// writeOnce writes what is queued, a due ping, or the close frame once
// the hub has disconnected the client. False means writing is over.
func (w *wsConn) writeOnce() bool {
	s, c := w.s, w.c
	if c.Disconnected() {
		code, reason := c.CloseReason()
		batch := w.drain()
		w.mu.Lock()
		reset := w.reset
		w.mu.Unlock()
		var err error
		switch {
		case reset:
			err = errReset
		case code != chat.CloseSlowConsumer:
			err = s.writeBatch(w.conn, w.cork, &w.renewAt, *batch)
		}
		// A slow consumer's backlog is dropped: it could not take it,
		// and writing it first would keep the close code (and the
		// reason to resume from history) from reaching it.
		w.releaseBatch(batch)
		if err == nil {
			err = w.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
				time.Now().Add(min(s.cfg.WriteTimeout, closeGrace)))
		}
		if err != nil {
			w.mu.Lock()
			w.reset = true // the close could not go out (finish)
			w.mu.Unlock()
		}
		return false
	}
	w.mu.Lock()
	ping := w.pingDue
	w.pingDue = false
	w.mu.Unlock()
	if ping {
		if err := w.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			return false
		}
	}
	if c.Queued() == 0 {
		return true
	}
	batch := w.drain()
	err := s.writeBatch(w.conn, w.cork, &w.renewAt, *batch)
	w.releaseBatch(batch)
	return err == nil
}

// drain takes the queued frames into a batch slice from the server's
// pool, so that an idle connection holds none.
func (w *wsConn) drain() *[][]byte {
	b, _ := w.s.batches.Get().(*[][]byte)
	if b == nil {
		b = new([][]byte)
	}
	*b = w.c.Drain((*b)[:0])
	return b
}

func (w *wsConn) releaseBatch(b *[][]byte) {
	clear(*b)
	if cap(*b) > 1024 {
		return // grown by a huge burst: let it go
	}
	*b = (*b)[:0]
	w.s.batches.Put(b)
}

// closeBacklog is how much a cut connection's socket may still hold for
// its peer (unsent or unacknowledged) for the close to be written behind
// it; with more, the connection is reset instead (abortConn).
const closeBacklog = 64 << 10

// backlogged reports whether conn's socket holds more than closeBacklog
// for its peer; false when that is not known.
func backlogged(conn net.Conn) bool {
	n, ok := unsent(conn)
	return ok && n > closeBacklog
}

// resetCut reports whether the hub's cut of c is to reset its
// connection conn, and if so prepares conn for it (abortConn): a slow
// consumer whose socket is backlogged. The close frame (or event) would
// wait behind that backlog, which is dropped with the connection as its
// queue was. It is decided once, when the hub lets go of c, while the
// socket is surely open.
func resetCut(c *chat.Client, conn net.Conn) bool {
	if code, _ := c.CloseReason(); code != chat.CloseSlowConsumer || !backlogged(conn) {
		return false
	}
	abortConn(conn)
	return true
}

// abortConn makes closing conn reset the TCP connection (SO_LINGER 0)
// instead of ending it in order. It is for a slow consumer's connection
// whose socket is backlogged, or whose close could not be written: what
// the socket still holds for the peer is dropped with it, as the queue
// above it was, and the peer learns on its next read that the connection
// is gone. Closed in order, the kernel would first deliver that backlog,
// megabytes the peer was cut off for being too slow to read; a peer
// whose receive buffer drops segments may then wait minutes on the
// kernel's retransmissions, or never hear of the end at all once they
// give up.
func abortConn(conn net.Conn) {
	if tc := tcpConn(conn); tc != nil {
		_ = tc.SetLinger(0)
	}
}

// tcpConn finds the TCP connection under conn (a corked, TLS or counted
// connection), or nil.
func tcpConn(conn net.Conn) *net.TCPConn {
	for {
		switch c := conn.(type) {
		case *net.TCPConn:
			return c
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil
		}
	}
}

// extendRead pushes the read deadline PongTimeout ahead, unless the
// writer has ended and set the last one.
func (w *wsConn) extendRead() {
	w.mu.Lock()
	if !w.ending {
		_ = w.conn.SetReadDeadline(time.Now().Add(w.s.cfg.PongTimeout))
	}
	w.mu.Unlock()
}

// readFrame reads one frame into a pooled buffer, so that an idle
// connection holds no frame buffer, and hands it to the client. An error
// ends the connection.
func (s *Server) readFrame(ctx context.Context, c *chat.Client, mt int, rd io.Reader) error {
	buf, _ := s.frames.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			s.frames.Put(buf)
		}
	}()
	lr := io.LimitedReader{R: rd, N: s.cfg.MaxFrameBytes + 1}
	if _, err := buf.ReadFrom(&lr); err != nil {
		return err // includes the hard cap: gorilla has sent 1009
	}
	if int64(buf.Len()) > s.cfg.MaxFrameBytes {
		// Too large but under the hard cap: skip it, keep the
		// connection.
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return err
		}
		_ = c.Reject(chat.CodeTooLarge, "frame is larger than the limit")
		return nil
	}
	if mt != websocket.TextMessage {
		_ = c.Reject(chat.CodeBadFrame, "frames must be text")
		return nil
	}
	// ErrClosed: disconnected by the hub; the writer sends the close
	// frame, and the reader keeps reading until the peer answers or
	// the socket closes.
	_ = c.Handle(ctx, buf.Bytes())
	return nil
}

// writeBatch writes queued frames, one WebSocket message each, under one
// write deadline and, through the corked connection, in one system call
// (or a few for a batch beyond corkLimit).
func (s *Server) writeBatch(conn *websocket.Conn, cork *corkConn, renewAt *time.Time, batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	// The deadline is renewed once an eighth of WriteTimeout has gone by,
	// not per batch: each renewal re-arms a runtime timer, and a batch
	// still gets at least seven eighths of WriteTimeout.
	if now := time.Now(); now.After(*renewAt) {
		if err := conn.SetWriteDeadline(now.Add(s.cfg.WriteTimeout)); err != nil {
			return err
		}
		*renewAt = now.Add(s.cfg.WriteTimeout / 8)
	}
	cork.cork()
	for i, f := range batch {
		if err := conn.WriteMessage(websocket.TextMessage, f); err != nil {
			_ = cork.uncork()
			return err
		}
		batch[i] = nil
	}
	return cork.uncork()
}
