package web

import (
	"bytes"
	"context"
	"errors"
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
	id, ok := s.authenticate(r, true)
	if !ok {
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "log in first")
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
	defer s.wg.Done()

	client, err := s.hub.Connect(r.Context(), id.user, id.sid)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "chat is unavailable right now")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered the request.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = client.Close(ctx)
		cancel()
		return
	}
	s.mu.Lock()
	s.conns[conn] = struct{}{}
	s.mu.Unlock()
	s.run(conn, client)
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// run owns one connection: the reader in its own goroutine, the writer
// here. When the reader ends the writer stops; when the writer ends
// (client disconnected by the hub, write error) the reader gets
// closeGrace to read the peer's close frame before the socket closes.
func (s *Server) run(conn *websocket.Conn, c *chat.Client) {
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
	s.writeLoop(ctx, conn, c, readerDone)
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
	var buf bytes.Buffer
	for {
		mt, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
		buf.Reset()
		lr := io.LimitedReader{R: rd, N: s.cfg.MaxFrameBytes + 1}
		if _, err := buf.ReadFrom(&lr); err != nil {
			return // includes the hard cap: gorilla has sent 1009
		}
		if int64(buf.Len()) > s.cfg.MaxFrameBytes {
			// Too large but under the hard cap: skip it, keep the
			// connection.
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
			c.SendError(chat.CodeTooLarge, "frame is larger than the limit", "")
			continue
		}
		if mt != websocket.TextMessage {
			c.SendError(chat.CodeBadFrame, "frames must be text", "")
			continue
		}
		if err := c.Handle(ctx, buf.Bytes()); errors.Is(err, chat.ErrClosed) {
			// Disconnected by the hub: the writer sends the close frame;
			// keep reading until the peer answers or the socket closes.
			continue
		}
	}
}

func (s *Server) writeLoop(ctx context.Context, conn *websocket.Conn, c *chat.Client, readerDone <-chan struct{}) {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	for {
		select {
		case <-c.Ready():
			batch = c.Drain(batch[:0])
			if err := s.writeBatch(conn, batch); err != nil {
				return
			}
		case <-c.Done():
			batch = c.Drain(batch[:0])
			if s.writeBatch(conn, batch) == nil {
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
// write deadline.
func (s *Server) writeBatch(conn *websocket.Conn, batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	if err := conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
		return err
	}
	for i, f := range batch {
		if err := conn.WriteMessage(websocket.TextMessage, f); err != nil {
			return err
		}
		batch[i] = nil
	}
	return nil
}
