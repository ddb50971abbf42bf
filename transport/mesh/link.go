package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/transport"
)

// Connection tuning.
const (
	pingInterval   = 10 * time.Second
	readTimeout    = 3 * pingInterval // a silent peer is dropped after this
	writeTimeout   = 10 * time.Second
	maxFrameBatch  = 256 << 10 // a flush writes frames of about this size
	maxMessageSize = 64 << 20
	maxClockSkew   = 30 * time.Second // handshake timestamps older or newer are rejected
	inboundWorkers = 64               // concurrent requests served per connection
)

// Handshake headers.
const (
	hdrFrom  = "X-Mesh-From"
	hdrTo    = "X-Mesh-To"
	hdrTime  = "X-Mesh-Time"
	hdrNonce = "X-Mesh-Nonce"
	hdrSig   = "X-Mesh-Sig"
	hdrProof = "X-Mesh-Proof"
)

func (b *Broker) mac(parts ...string) string {
	m := hmac.New(sha256.New, b.cfg.Key)
	m.Write([]byte("meshchat-mesh-v1"))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// nonceCache remembers handshake nonces for twice the allowed clock skew,
// so a captured handshake cannot be replayed.
type nonceCache struct {
	mu   sync.Mutex
	seen map[string]int64 // nonce -> expiry (Unix ms)
}

func (c *nonceCache) fresh(nonce string, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) > 4096 {
		for n, exp := range c.seen {
			if exp < now {
				delete(c.seen, n)
			}
		}
	}
	if exp, ok := c.seen[nonce]; ok && exp >= now {
		return false
	}
	c.seen[nonce] = now + 2*maxClockSkew.Milliseconds()
	return true
}

// authenticate checks a dialling peer's handshake and returns its name
// and the proof this node answers with.
func (b *Broker) authenticate(h http.Header) (peer, proof string, err error) {
	from, to, ts, nonce, sig := h.Get(hdrFrom), h.Get(hdrTo), h.Get(hdrTime), h.Get(hdrNonce), h.Get(hdrSig)
	if from == "" || to != b.cfg.Self.Name || len(nonce) < 16 || sig == "" {
		return "", "", fmt.Errorf("%w: missing or misaddressed handshake", ErrAuth)
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	now := time.Now().UnixMilli()
	if err != nil || now-t > maxClockSkew.Milliseconds() || t-now > maxClockSkew.Milliseconds() {
		return "", "", fmt.Errorf("%w: stale or bad timestamp", ErrAuth)
	}
	if !hmac.Equal([]byte(sig), []byte(b.mac("dial", from, to, ts, nonce))) {
		return "", "", fmt.Errorf("%w: bad signature from %q", ErrAuth, from)
	}
	if !b.nonces.fresh(nonce, now) {
		return "", "", fmt.Errorf("%w: replayed nonce", ErrAuth)
	}
	return from, b.mac("proof", to, from, nonce), nil
}

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
	peer, proof, err := b.authenticate(r.Header)
	if err != nil {
		b.log.Warn("rejected peer connection", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if !b.goAdd() {
		http.Error(w, "mesh broker closing", http.StatusServiceUnavailable)
		return
	}
	defer b.wg.Done()
	ws, err := b.upgrader.Upgrade(w, r, http.Header{hdrProof: {proof}})
	if err != nil {
		return // Upgrade answered the client
	}
	ic := &inConn{b: b, peer: peer, ws: ws, q: newSendQueue(b.cfg.QueueBytes)}
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

// sendQueue is a connection's bounded outbound queue of encoded messages.
type sendQueue struct {
	mu     sync.Mutex
	msgs   [][]byte
	spare  [][]byte
	size   int
	max    int
	closed bool
	wake   chan struct{}
}

func newSendQueue(max int) *sendQueue {
	return &sendQueue{max: max, wake: make(chan struct{}, 1)}
}

// push queues m; false when the queue is full or closed.
func (q *sendQueue) push(m []byte) bool {
	q.mu.Lock()
	if q.closed || q.size+len(m) > q.max && len(q.msgs) > 0 {
		q.mu.Unlock()
		return false
	}
	q.msgs = append(q.msgs, m)
	q.size += len(m)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take swaps out everything queued; the writer hands the slice back with
// recycle so steady traffic does not allocate a new one per flush.
func (q *sendQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.msgs
	q.msgs, q.spare = q.spare[:0], nil
	q.size = 0
	return m
}

func (q *sendQueue) recycle(m [][]byte) {
	clear(m)
	q.mu.Lock()
	if q.spare == nil {
		q.spare = m[:0]
	}
	q.mu.Unlock()
}

// reset drops what is queued and returns it.
func (q *sendQueue) reset() [][]byte {
	q.mu.Lock()
	m := q.msgs
	q.msgs, q.size = nil, 0
	q.mu.Unlock()
	return m
}

func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.msgs, q.size = nil, 0
	q.mu.Unlock()
}

// writeLoop drains q into ws until stop closes or a write fails; one flush
// writes everything queued as few frames. When a write fails, lost (if
// set) is given the batch that was being written: some of it may never
// have reached the peer.
func writeLoop(ws *websocket.Conn, q *sendQueue, stop <-chan struct{}, lost func([][]byte)) (err error) {
	var msgs [][]byte
	defer func() {
		if err != nil && lost != nil && len(msgs) > 0 {
			lost(msgs)
		}
	}()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	var lenBuf [binary.MaxVarintLen64]byte
	for {
		select {
		case <-stop:
			return nil
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				return err
			}
			continue
		case <-q.wake:
		}
		msgs = q.take()
		if len(msgs) == 0 {
			continue
		}
		_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		var w interface {
			Write([]byte) (int, error)
			Close() error
		}
		size := 0
		for _, m := range msgs {
			if w == nil || size >= maxFrameBatch {
				if w != nil {
					if err := w.Close(); err != nil {
						return err
					}
				}
				nw, err := ws.NextWriter(websocket.BinaryMessage)
				if err != nil {
					return err
				}
				w, size = nw, 0
			}
			n := binary.PutUvarint(lenBuf[:], uint64(len(m)))
			if _, err := w.Write(lenBuf[:n]); err != nil {
				return err
			}
			if _, err := w.Write(m); err != nil {
				return err
			}
			size += n + len(m)
		}
		if err := w.Close(); err != nil {
			return err
		}
		q.recycle(msgs)
		msgs = nil
	}
}

// readLoop reads frames and hands each message in them to handle.
func readLoop(ws *websocket.Conn, handle func([]byte)) error {
	ws.SetReadLimit(maxMessageSize)
	extend := func(string) error { return ws.SetReadDeadline(time.Now().Add(readTimeout)) }
	_ = extend("")
	ws.SetPongHandler(extend)
	ws.SetPingHandler(func(data string) error {
		_ = extend("")
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		_ = extend("")
		for len(data) > 0 {
			n, k := binary.Uvarint(data)
			if k <= 0 || n > uint64(len(data)-k) {
				return errBadFrame
			}
			handle(data[k : k+int(n)])
			data = data[k+int(n):]
		}
	}
}

// inConn is a connection a peer dialled to this node. The peer sends
// requests and deliveries on it; this node answers requests on it.
type inConn struct {
	b      *Broker
	peer   string
	ws     *websocket.Conn
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
		if err := writeLoop(ic.ws, ic.q, ic.ctx.Done(), nil); err != nil {
			ic.b.log.Debug("peer connection write failed", "peer", ic.peer, "err", err)
		}
		ic.ws.Close() // unblocks the reader
	}()
	sem := make(chan struct{}, inboundWorkers)
	err := readLoop(ic.ws, func(msg []byte) { ic.handle(msg, sem) })
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
			resp, err := ic.b.serveOwner(ctx, ic.peer, op, ch, &d)
			cancel()
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
			if !ic.q.push(e) {
				ic.cancel() // a peer that does not read its answers is dropped
			}
		}()
	}
}

// link is this node's connection to one peer, dialled lazily when there is
// something to send and redialled with backoff. Everything this node
// originates for the peer (requests, and deliveries of the channels it
// owns) goes through the link's one queue, in order.
type link struct {
	b    *Broker
	peer transport.Peer
	q    *sendQueue

	mu        sync.Mutex
	pending   map[uint64]chan result
	nextID    uint64
	downUntil time.Time
	lastErr   error
	ws        *websocket.Conn
	// missed are channels whose deliveries to the peer were dropped
	// (link down, queue full or reset, connection cut mid-write). The
	// link redials while any are noted and, once connected, sends the
	// peer a notice for each, so it re-registers and fetches the gap
	// from history instead of waiting for the channel's next message.
	missed map[string]struct{}

	stop     chan struct{}
	stopOnce sync.Once
}

type result struct {
	status byte
	body   []byte
	msg    string
}

// linkTo returns the link to peer, starting it if needed.
func (b *Broker) linkTo(peer transport.Peer) *link {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	if l := b.links[peer.Name]; l != nil && l.peer.Addr == peer.Addr {
		return l
	} else if l != nil {
		l.close() // the peer moved
	}
	l := &link{
		b:       b,
		peer:    peer,
		q:       newSendQueue(b.cfg.QueueBytes),
		pending: make(map[uint64]chan result),
		stop:    make(chan struct{}),
	}
	if b.closed.Load() || !b.goFn(l.run) {
		l.close()
		l.fail(transport.ErrClosed, time.Hour)
	} else {
		b.links[peer.Name] = l
	}
	return l
}

func (l *link) close() {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.q.close()
		l.mu.Lock()
		if l.ws != nil {
			l.ws.Close()
		}
		l.mu.Unlock()
	})
}

// call sends a request and waits for its response.
func (l *link) call(ctx context.Context, op byte, ch string, body []byte) ([]byte, error) {
	l.mu.Lock()
	if time.Now().Before(l.downUntil) {
		err := l.lastErr
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %w: peer %s: %w", transport.ErrUnavailable, errPeerDown, l.peer.Name, err)
	}
	l.nextID++
	id := l.nextID
	rc := make(chan result, 1)
	l.pending[id] = rc
	l.mu.Unlock()

	msg := enc(make([]byte, 0, 16+len(ch)+len(body))).byte1(kindRequest).u(id).byte1(op).str(ch).append(body)
	if !l.q.push(msg) {
		l.forget(id)
		return nil, fmt.Errorf("%w: %w: peer %s: queue full or closed", transport.ErrUnavailable, errPeerDown, l.peer.Name)
	}
	select {
	case r := <-rc:
		switch r.status {
		case stOK:
			return r.body, nil
		case stNotOwner:
			d := dec{b: r.body}
			hint := transport.Peer{Name: d.str(), Addr: d.str()}
			if d.err != nil {
				hint = transport.Peer{}
			}
			return nil, notOwner(hint)
		case stNeedSync:
			return nil, errNeedSync
		case stBadRequest:
			return nil, fmt.Errorf("%w: peer %s: %s", errBadFrame, l.peer.Name, r.msg)
		case stLinkDown:
			return nil, fmt.Errorf("%w: %w: peer %s: %s", transport.ErrUnavailable, errPeerDown, l.peer.Name, r.msg)
		default:
			return nil, fmt.Errorf("%w: peer %s: %s", transport.ErrUnavailable, l.peer.Name, r.msg)
		}
	case <-ctx.Done():
		l.forget(id)
		return nil, fmt.Errorf("%w: peer %s: %w", transport.ErrUnavailable, l.peer.Name, ctx.Err())
	}
}

func (l *link) forget(id uint64) {
	l.mu.Lock()
	delete(l.pending, id)
	l.mu.Unlock()
}

// deliverTo queues a delivery of channel ch for node. When the peer cannot
// take it (its queue is full) the connection is cut: the peer notices, and
// re-registers its channels, which returns what it missed. Either way the
// channel is noted as missed, so the peer also gets a notice once the
// link is back.
func (b *Broker) deliverTo(node, ch string, msg []byte) {
	p, ok := b.peerByName(node)
	if !ok {
		return
	}
	l := b.linkTo(p)
	l.mu.Lock()
	down := time.Now().Before(l.downUntil)
	l.mu.Unlock()
	if down {
		l.noteMissed(ch)
		return
	}
	if !l.q.push(msg) {
		l.noteMissed(ch)
		l.mu.Lock()
		if l.ws != nil {
			l.ws.Close()
		}
		l.mu.Unlock()
	}
}

// sendTo queues a one-way message for peer (which need not be in this
// node's view) unless its link is down.
func (b *Broker) sendTo(p transport.Peer, msg []byte) {
	l := b.linkTo(p)
	l.mu.Lock()
	down := time.Now().Before(l.downUntil)
	l.mu.Unlock()
	if !down {
		l.q.push(msg)
	}
}

func (l *link) noteMissed(ch string) {
	l.mu.Lock()
	if l.missed == nil {
		l.missed = make(map[string]struct{})
	}
	l.missed[ch] = struct{}{}
	l.mu.Unlock()
	select {
	case l.q.wake <- struct{}{}: // redial if idle
	default:
	}
}

// lost notes the channels of deliveries among msgs as missed.
func (l *link) lost(msgs [][]byte) {
	for _, m := range msgs {
		d := dec{b: m}
		if d.byte1() == kindDelivery {
			if ch := d.str(); d.err == nil {
				l.noteMissed(ch)
			}
		}
	}
}

// sendNotices queues a notice for every missed channel.
func (l *link) sendNotices() {
	l.mu.Lock()
	missed := l.missed
	l.missed = nil
	l.mu.Unlock()
	for ch := range missed {
		l.q.push(enc(make([]byte, 0, 2+len(ch))).byte1(kindNotice).str(ch))
	}
}

func (b *Broker) peerByName(name string) (transport.Peer, bool) {
	for _, p := range b.peerList() {
		if p.Name == name {
			return p, true
		}
	}
	return transport.Peer{}, false
}

// fail ends every pending request with err, drops what is queued (a
// request queued behind a failure must not be sent after its caller gave
// up), and refuses new traffic for down.
func (l *link) fail(err error, down time.Duration) {
	l.lost(l.q.reset())
	l.mu.Lock()
	l.lastErr = err
	l.downUntil = time.Now().Add(down)
	pending := l.pending
	l.pending = make(map[uint64]chan result)
	l.mu.Unlock()
	for _, rc := range pending {
		rc <- result{status: stLinkDown, msg: err.Error()}
	}
}

func (l *link) run() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-l.stop:
			l.fail(transport.ErrClosed, time.Hour)
			return
		case <-l.q.wake:
		}
		ws, err := l.dial()
		if err != nil {
			l.b.log.Debug("dial peer failed", "peer", l.peer.Name, "err", err, "retry_in", backoff)
			l.fail(err, backoff)
			select {
			case <-l.stop:
				l.fail(transport.ErrClosed, time.Hour)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			l.mu.Lock()
			retry := len(l.missed) > 0
			l.mu.Unlock()
			if retry {
				select {
				case l.q.wake <- struct{}{}:
				default:
				}
			}
			continue
		}
		backoff = 50 * time.Millisecond
		l.mu.Lock()
		l.ws = ws
		stopped := false
		select {
		case <-l.stop:
			stopped = true
		default:
		}
		l.mu.Unlock()
		if stopped {
			ws.Close()
			continue
		}
		l.sendNotices()
		// Wake the writer for what was queued while dialling.
		select {
		case l.q.wake <- struct{}{}:
		default:
		}
		err = l.serve(ws)
		l.mu.Lock()
		l.ws = nil
		l.mu.Unlock()
		l.b.log.Debug("peer link closed", "peer", l.peer.Name, "err", err)
		l.fail(fmt.Errorf("connection lost: %w", err), 0)
	}
}

func (l *link) dial() (*websocket.Conn, error) {
	u := strings.TrimSuffix(l.peer.Addr, "/") + MountPath + "ws"
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	self := l.b.cfg.Self.Name
	h := http.Header{
		hdrFrom:  {self},
		hdrTo:    {l.peer.Name},
		hdrTime:  {ts},
		hdrNonce: {nonce},
		hdrSig:   {l.b.mac("dial", self, l.peer.Name, ts, nonce)},
	}
	d := websocket.Dialer{HandshakeTimeout: l.b.cfg.DialTimeout, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
	ctx, cancel := context.WithTimeout(l.b.ctx, l.b.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	want := l.b.mac("proof", l.peer.Name, self, nonce)
	if !hmac.Equal([]byte(resp.Header.Get(hdrProof)), []byte(want)) {
		ws.Close()
		return nil, fmt.Errorf("%w: %s did not prove the key", ErrAuth, l.peer.Name)
	}
	return ws, nil
}

// serve runs the connection until it fails or the link stops: a writer
// drains the queue, this goroutine's reader takes responses.
func (l *link) serve(ws *websocket.Conn) error {
	readDone := make(chan error, 1)
	go func() {
		readDone <- readLoop(ws, l.handleResponse)
	}()
	stop := make(chan struct{})
	writeDone := make(chan error, 1)
	go func() {
		writeDone <- writeLoop(ws, l.q, stop, l.lost)
	}()
	var err error
	select {
	case err = <-readDone:
		close(stop)
		ws.Close()
		<-writeDone
	case err = <-writeDone:
		close(stop)
		ws.Close()
		<-readDone
	case <-l.stop:
		close(stop)
		<-writeDone
		ws.Close()
		<-readDone
		err = transport.ErrClosed
	}
	ws.Close()
	return err
}

func (l *link) handleResponse(msg []byte) {
	d := dec{b: msg}
	if d.byte1() != kindResponse {
		return
	}
	id, status := d.u(), d.byte1()
	r := result{status: status}
	if status != stOK {
		r.msg = d.str()
	}
	r.body = d.b
	if d.err != nil {
		return
	}
	l.mu.Lock()
	rc, ok := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	if ok {
		rc <- r
	}
}
