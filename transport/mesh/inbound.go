package mesh

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Inbound handling: the connections peers dial to this node. The
// handshake is checked (handshake.go), then the connection's reader takes
// deliveries and notices, which go to this node's side of their channel
// (local.go), and requests, each served on its own goroutine by its op's
// handler (serveRequest) and answered on the same connection.

// inboundWorkers bounds the requests served at once per connection.
const inboundWorkers = 64

// Handler returns the endpoint peers dial. Mount it at MountPath; it
// serves the WebSocket at any path ending in "/ws", so it works whether or
// not the mount strips the prefix.
func (b *Broker) Handler() http.Handler {
	return http.HandlerFunc(b.serveHTTP)
}

// newUpgrader returns the WebSocket upgrader for peer connections; each
// Broker keeps its own (no package-level state).
func newUpgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  32 << 10,
		WriteBufferSize: 32 << 10,
		// Peers are not browsers; the HMAC handshake is the access control.
		CheckOrigin: func(*http.Request) bool { return true },
	}
}

func (b *Broker) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/ws") {
		http.NotFound(w, r)
		return
	}
	if !b.started.Load() || b.closed.Load() {
		http.Error(w, "mesh broker not running", http.StatusServiceUnavailable)
		return
	}
	peer, answer, fc, err := b.authenticate(r.Header)
	if err != nil {
		// Anyone who can reach the HTTP port can send these: counted
		// always, logged a few times a second at most.
		b.counts.rejected.Add(1)
		if dropped, ok := b.junkLog.Allow(time.Now()); ok {
			b.log.Warn("rejected peer connection", "remote", r.RemoteAddr, "err", err, "not_logged_since", dropped)
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if !b.goAdd() {
		http.Error(w, "mesh broker closing", http.StatusServiceUnavailable)
		return
	}
	defer b.wg.Done()
	ws, err := b.upgrader.Upgrade(w, r, answer)
	if err != nil {
		return // Upgrade answered the client
	}
	ic := &inConn{b: b, peer: peer, ws: ws, fc: fc, q: newSendQueue(b.cfg.QueueBytes)}
	ic.ctx, ic.cancel = context.WithCancel(b.ctx)
	b.linkMu.Lock()
	if b.closed.Load() {
		b.linkMu.Unlock()
		ws.Close()
		return
	}
	b.inbound[ic] = struct{}{}
	b.linkMu.Unlock()
	ic.run()
	b.linkMu.Lock()
	delete(b.inbound, ic)
	b.linkMu.Unlock()
	b.peerDropped(peer)
}

// inConn is a connection a peer dialled to this node. The peer sends
// requests and deliveries on it; this node answers requests on it.
type inConn struct {
	b      *Broker
	peer   string
	ws     *websocket.Conn
	fc     frameCiphers
	q      *sendQueue
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // request goroutines
}

func (ic *inConn) close() { ic.cancel() }

func (ic *inConn) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := writeLoop(ic.ws, ic.fc.seal, ic.q, ic.ctx.Done(), nil); err != nil {
			ic.b.log.Debug("peer connection write failed", "peer", ic.peer, "err", err)
		}
		ic.ws.Close() // unblocks the reader
	}()
	sem := make(chan struct{}, inboundWorkers)
	err := readLoop(ic.ws, ic.fc.open, func(msg []byte) { ic.handle(msg, sem) })
	ic.b.readFailed(ic.peer, err)
	ic.b.log.Debug("peer connection closed", "peer", ic.peer, "err", err)
	ic.cancel()
	<-writerDone
	ic.wg.Wait()
	ic.q.close()
}

func (ic *inConn) handle(msg []byte, sem chan struct{}) {
	d := dec{b: msg}
	switch d.byte1() {
	case kindDelivery:
		ch := d.str()
		pub := d.pub()
		if d.err == nil {
			ic.b.deliver(ic.peer, ch, pub)
		}
	case kindNotice:
		if ch := d.str(); d.err == nil {
			ic.b.noticed(ch)
		}
	case kindRequest:
		id, op, ch := d.u(), d.byte1(), d.str()
		if d.err != nil {
			return
		}
		body := d.b
		select {
		case sem <- struct{}{}: // bounded: a flood of requests slows this reader
		case <-ic.ctx.Done():
			return
		}
		ic.wg.Add(1)
		go func() {
			defer ic.wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ic.ctx, ic.b.cfg.RequestTimeout)
			d := dec{b: body}
			resp, err := ic.b.serveRequest(ctx, ic.peer, op, ch, &d)
			cancel()
			if !ic.q.push(response(id, resp, err)) {
				ic.cancel() // a peer that does not read its answers is dropped
			}
		}()
	}
}

// response encodes the answer to request id: resp, or err as its status.
func response(id uint64, resp []byte, err error) []byte {
	e := enc(make([]byte, 0, 8+len(resp))).byte1(kindResponse).u(id)
	switch {
	case err == nil:
		e = e.byte1(stOK).append(resp)
	case errors.Is(err, errNotOwner):
		hint, _ := hintOf(err)
		e = e.byte1(stNotOwner).str(err.Error()).str(hint.Name).str(hint.Addr)
	case errors.Is(err, errNeedSync):
		e = e.byte1(stNeedSync).str(err.Error())
	case errors.Is(err, errBadFrame):
		e = e.byte1(stBadRequest).str(err.Error())
	default:
		e = e.byte1(stUnavailable).str(err.Error())
	}
	return e
}
