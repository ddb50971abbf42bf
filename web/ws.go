package web

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/chat"
)

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
	go func() {
		defer s.wg.Done()
		s.run(conn, cw.conn, client)
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
}

// run owns one connection: the reader in its own goroutine, the writer
// here. When the reader ends the writer stops; when the writer ends
// (client disconnected by the hub, write error) the reader gets
// closeGrace to read the peer's close frame before the socket closes.
func (s *Server) run(conn *websocket.Conn, cork *corkConn, c *chat.Client) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// A write blocked on a full socket (the usual state of a slow
	// consumer) must not hold the connection for the whole WriteTimeout
	// once the hub has let go of the client.
	stop := context.AfterFunc(c.Context(), func() {
		_ = conn.NetConn().SetWriteDeadline(time.Now().Add(closeGrace))
	})
	defer stop()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		s.readLoop(ctx, conn, c)
	}()
	s.writeLoop(ctx, conn, cork, c, readerDone)
	cancel()
	t := time.NewTimer(closeGrace)
	select {
	case <-readerDone:
	case <-t.C:
	}
	t.Stop()
	_ = conn.Close()
	<-readerDone
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = c.Close(cctx)
	ccancel()
}

func (s *Server) readLoop(ctx context.Context, conn *websocket.Conn, c *chat.Client) {
	conn.SetReadLimit(s.cfg.HardFrameBytes)
	_ = conn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	})
	for {
		mt, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
		if !s.readFrame(ctx, c, mt, rd) {
			return
		}
	}
}

// readFrame reads one frame into a pooled buffer, so that an idle
// connection holds no frame buffer, and hands it to the client. False
// ends the connection.
func (s *Server) readFrame(ctx context.Context, c *chat.Client, mt int, rd io.Reader) bool {
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
		return false // includes the hard cap: gorilla has sent 1009
	}
	if int64(buf.Len()) > s.cfg.MaxFrameBytes {
		// Too large but under the hard cap: skip it, keep the
		// connection.
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return false
		}
		_ = c.Reject(chat.CodeTooLarge, "frame is larger than the limit")
		return true
	}
	if mt != websocket.TextMessage {
		_ = c.Reject(chat.CodeBadFrame, "frames must be text")
		return true
	}
	// ErrClosed: disconnected by the hub; the writer sends the close
	// frame, and the reader keeps reading until the peer answers or
	// the socket closes.
	_ = c.Handle(ctx, buf.Bytes())
	return true
}

func (s *Server) writeLoop(ctx context.Context, conn *websocket.Conn, cork *corkConn, c *chat.Client, readerDone <-chan struct{}) {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	var renewAt time.Time // when the write deadline is due for renewal
	for {
		select {
		case <-c.Ready():
			batch = c.Drain(batch[:0])
			if err := s.writeBatch(conn, cork, &renewAt, batch); err != nil {
				return
			}
		case <-c.Done():
			batch = c.Drain(batch[:0])
			if s.writeBatch(conn, cork, &renewAt, batch) == nil {
				code, reason := c.CloseReason()
				_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason),
					time.Now().Add(min(s.cfg.WriteTimeout, closeGrace)))
			}
			return
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				return
			}
		case <-readerDone:
			return
		case <-ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(chat.CloseServiceRestart, "service restart"),
				time.Now().Add(time.Second))
			return
		}
	}
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
