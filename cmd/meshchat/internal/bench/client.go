package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Run phases, read by every reader on every delivery.
const (
	phaseSetup int32 = iota
	phaseWarmup
	phaseMeasure
	phaseDrain
)

const (
	// writeTimeout bounds one frame write: a server that stops reading
	// must not wedge a publisher forever.
	writeTimeout = 5 * time.Second
	// handshakeTimeout bounds login, upgrade and the welcome frame.
	handshakeTimeout = 15 * time.Second
	// readLimit accepts large joined frames (history of 1000+ messages).
	readLimit = 64 << 20

	// A slow client, during the load, pauses slowFrameGap after every
	// frame: at most 100 frames a second, a tenth of a saturated room.
	// It trickles rather than stalling and bursting: a burst would read
	// megabytes at once and let the server's socket send buffer grow
	// (Linux autotunes it up to tcp_wmem's 4 MiB), which then hides the
	// backlog from the server's queue for many seconds. slowReadBuffer is
	// its socket receive buffer: small, so the kernel does not absorb much
	// either, and a close frame queued behind the backlog is reached soon.
	slowFrameGap   = 10 * time.Millisecond
	slowReadBuffer = 32 << 10
)

var errUnauthorized = errors.New("bench: session rejected (401)")

// client is one simulated user with one WebSocket connection.
type client struct {
	r        *runner
	idx      int
	name     string
	room     int
	roomName string
	target   int // index into r.targets of the node it logs in to
	hist     *lockedHist
	slow     bool // reads slowly during the load (Scenario.SlowClients)

	cookie string // set by login; touched only by the client's own goroutines in turn

	wmu    sync.Mutex
	conn   *websocket.Conn // guarded by wmu
	closed bool            // guarded by wmu: stop was called

	// Owned by the reader goroutine.
	buf    []byte
	lastID []byte
	seen   []bitset // per publisher of the room, by local index
	// floor, per publisher of the room: sequence numbers below it that
	// never arrived fell in the gap of an unrecovered resume.
	floor      []int64
	acked      bitset // publishers only: own messages echoed with the ref
	joinedOnce bool
	resuming   bool
	f          frame
	joined     chan struct{}

	pub *publisher // nil unless this client sends

	frames      atomic.Int64 // every frame read
	deliveries  atomic.Int64 // unique bench messages received, all phases
	window      atomic.Int64 // unique live deliveries during the measure phase
	dups        atomic.Int64
	resumed     atomic.Int64 // deliveries that came in a resume's history
	acks        atomic.Int64
	disconnects atomic.Int64
	reconnects  atomic.Int64
	unrecovered atomic.Int64
	rejoins     atomic.Int64 // resumes answered (joined after a reconnect)

	emu        sync.Mutex
	errCodes   map[string]int64 // guarded by emu
	closeCodes map[string]int64 // guarded by emu
}

// publisher is the sending side of a client.
type publisher struct {
	c      *client
	id     int
	target atomic.Int64 // messages due so far, set by the shared ticker
	wake   chan struct{}
	sent   int64 // owned by the publisher goroutine: next seq
	ok     atomic.Int64
	failed atomic.Int64
	buf    []byte
	prefix int // length of the constant frame prefix in buf
}

func (c *client) countErr(m *map[string]int64, key string) {
	c.emu.Lock()
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[key]++
	c.emu.Unlock()
}

// login obtains a session cookie from the client's node.
func (c *client) login(ctx context.Context) error {
	target := c.r.targets[c.target]
	body, _ := json.Marshal(map[string]string{"name": c.name})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"/api/login", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.r.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("login %s: %w", c.name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("login %s at %s: %s: %s", c.name, target, resp.Status, strings.TrimSpace(string(msg)))
	}
	var parts []string
	for _, ck := range resp.Cookies() {
		parts = append(parts, ck.Name+"="+ck.Value)
	}
	if len(parts) == 0 {
		return fmt.Errorf("login %s at %s: no session cookie", c.name, target)
	}
	c.cookie = strings.Join(parts, "; ")
	return nil
}

// dial upgrades to /ws on node t and reads the welcome frame.
func (c *client) dial(ctx context.Context, t int) (*websocket.Conn, error) {
	u := c.r.wsURLs[t]
	hdr := http.Header{}
	hdr.Set("Cookie", c.cookie)
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	dialer := c.r.dialer
	if c.slow {
		dialer = c.r.slowDialer
	}
	conn, resp, err := dialer.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, errUnauthorized
		}
		return nil, fmt.Errorf("upgrade %s: %w", u, err)
	}
	conn.SetReadLimit(readLimit)
	_ = conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	n, err := c.readFrame(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("welcome from %s: %w", u, err)
	}
	if err := c.f.parse(c.buf[:n]); err != nil || !isString(c.f.typ, "welcome") {
		conn.Close()
		return nil, fmt.Errorf("welcome from %s: first frame is not a welcome: %.200s", u, c.buf[:n])
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// connect logs in, upgrades and sends the join: what a user does when
// opening the app, timed as the connect time.
func (c *client) connect(ctx context.Context) error {
	start := time.Now()
	if err := c.login(ctx); err != nil {
		return err
	}
	conn, err := c.dial(ctx, c.target)
	if err != nil {
		return err
	}
	c.r.connectHist.record(time.Since(start).Microseconds())
	if !c.setConn(conn) {
		return context.Canceled
	}
	return c.sendJoin(nil)
}

// setConn installs conn unless the client was stopped meanwhile.
func (c *client) setConn(conn *websocket.Conn) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		conn.Close()
		return false
	}
	c.conn = conn
	return true
}

func (c *client) getConn() *websocket.Conn {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn
}

// write sends one text frame.
func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.conn == nil || c.closed {
		return errConnClosed
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

var errConnClosed = errors.New("bench: connection closed")

// sendJoin joins the client's room, resuming after lastID when set.
func (c *client) sendJoin(after []byte) error {
	j := struct {
		Type  string `json:"type"`
		Room  string `json:"room"`
		After string `json:"after,omitempty"`
	}{"join", c.roomName, string(after)}
	b, _ := json.Marshal(j)
	return c.write(b)
}

// stop closes the connection for good; the reader then returns.
func (c *client) stop() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.closed = true
	if c.conn != nil {
		_ = c.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"),
			time.Now().Add(100*time.Millisecond))
		c.conn.Close()
	}
}

func (c *client) isClosed() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.closed
}

// readFrame reads one message into c.buf, growing it as needed.
func (c *client) readFrame(conn *websocket.Conn) (int, error) {
	_, rd, err := conn.NextReader()
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		if n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		m, err := rd.Read(c.buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// run is the client's reader goroutine: it reads until the connection
// ends, then reconnects and resumes unless the client was stopped.
func (c *client) run(ctx context.Context) {
	defer c.r.readers.Done()
	for {
		conn := c.getConn()
		err := c.readLoop(conn)
		if c.isClosed() || ctx.Err() != nil {
			return
		}
		c.disconnects.Add(1)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			c.countErr(&c.closeCodes, strconv.Itoa(ce.Code))
		} else {
			c.countErr(&c.closeCodes, "abnormal")
		}
		if !c.reconnect(ctx) {
			return
		}
	}
}

func (c *client) readLoop(conn *websocket.Conn) error {
	for {
		n, err := c.readFrame(conn)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		c.frames.Add(1)
		c.handle(c.buf[:n], now)
		if c.slow && c.r.slowNow() {
			// A bounded pause; stop closes the connection, so the next
			// read after it returns at once.
			time.Sleep(slowFrameGap)
		}
	}
}

// reconnect dials again (the client's own node first, then the others)
// with capped exponential backoff and rejoins after the last message seen.
func (c *client) reconnect(ctx context.Context) bool {
	backoff := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
		t := time.NewTimer(backoff + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
		if c.isClosed() {
			return false
		}
		node := (c.target + attempt) % len(c.r.targets)
		conn, err := c.dial(ctx, node)
		if errors.Is(err, errUnauthorized) {
			// The session may have lived only on a node that is gone.
			if c.login(ctx) == nil {
				conn, err = c.dial(ctx, node)
			}
		}
		if err != nil {
			continue
		}
		if !c.setConn(conn) {
			return false
		}
		c.reconnects.Add(1)
		c.resuming = true
		if err := c.sendJoin(c.lastID); err != nil {
			continue
		}
		return true
	}
}

// handle processes one server frame.
func (c *client) handle(b []byte, now int64) {
	f := &c.f
	if err := f.parse(b); err != nil {
		c.countErr(&c.errCodes, "bench_unparsable_frame")
		return
	}
	switch {
	case isString(f.typ, "message"):
		if isString(f.room, c.roomName) {
			c.deliver(f.id, f.text, f.ref, now, true)
		}
	case isString(f.typ, "joined"):
		if !isString(f.room, c.roomName) {
			return
		}
		if c.resuming {
			c.resuming = false
			c.rejoins.Add(1)
			recovered := string(f.recovered) == "true"
			if !recovered {
				c.unrecovered.Add(1)
			}
			var first []int64 // per publisher: lowest seq in the history
			if !recovered {
				first = make([]int64, len(c.seen))
				for k := range first {
					first[k] = -1
				}
			}
			hist := f.history
			it := arrIter{b: hist}
			var m frame
			for {
				el, ok := it.next()
				if !ok {
					break
				}
				if m.parse(el) != nil {
					continue
				}
				if first != nil {
					c.noteFirst(first, m.text)
				}
				c.deliver(m.id, m.text, nil, now, false)
			}
			if first != nil {
				c.raiseFloor(first)
			}
		}
		if !c.joinedOnce {
			c.joinedOnce = true
			close(c.joined)
		}
	case isString(f.typ, "error"):
		code, _ := strValue(f.code)
		c.countErr(&c.errCodes, string(code))
	}
}

// noteFirst records text's sequence number in first when it is the
// lowest of its publisher so far.
func (c *client) noteFirst(first []int64, textRaw []byte) {
	text, ok := strValue(textRaw)
	if !ok {
		return
	}
	pub, seq, _, ok := parseText(text)
	rooms := c.r.sc.Rooms
	if !ok || pub%rooms != c.room || pub/rooms >= len(first) || seq < 0 {
		return
	}
	if k := pub / rooms; first[k] < 0 || seq < first[k] {
		first[k] = seq
	}
}

// raiseFloor books the gap of an unrecovered resume. The history holds
// the room's latest messages, in the room's one order, so every message
// of a publisher older than its first one in the history was published
// before the history starts: if it never arrived, the room no longer had
// it. A publisher absent from the history had nothing retained: every
// message it had sent by now is in the gap.
func (c *client) raiseFloor(first []int64) {
	rooms := c.r.sc.Rooms
	for k, seq := range first {
		if seq < 0 {
			seq = c.r.clients[c.room+k*rooms].pub.ok.Load()
		}
		c.floor[k] = max(c.floor[k], seq)
	}
}

// deliver books one received copy of a message.
func (c *client) deliver(idRaw, textRaw, refRaw []byte, now int64, live bool) {
	text, ok := strValue(textRaw)
	if !ok {
		return
	}
	pub, seq, sentNs, ok := parseText(text)
	rooms := c.r.sc.Rooms
	if !ok || pub%rooms != c.room || pub/rooms >= len(c.seen) || seq < 0 {
		return // not a bench message of this room
	}
	if id, ok := strValue(idRaw); ok {
		c.lastID = append(c.lastID[:0], id...)
	}
	if c.seen[pub/rooms].set(seq) {
		c.dups.Add(1)
		return
	}
	c.deliveries.Add(1)
	if !live {
		c.resumed.Add(1)
		return
	}
	if c.r.phase.Load() == phaseMeasure {
		c.window.Add(1)
		// A slow client's latency is its own backlog, not the cluster's.
		if !c.slow {
			c.hist.record((now - sentNs) / 1000)
		}
	}
	if c.pub != nil && pub == c.idx && len(refRaw) > 0 {
		if !c.acked.set(seq) {
			c.acks.Add(1)
		}
	}
}

// run is the publisher goroutine: it sends whatever the shared ticker
// says is due, stamping each frame with the time it is written.
func (p *publisher) run(ctx context.Context) {
	defer p.c.r.pubs.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for due := p.target.Load(); p.sent < due; p.sent++ {
			if ctx.Err() != nil {
				return
			}
			b := p.frame(p.sent, time.Now().UnixNano())
			if err := p.c.write(b); err != nil {
				p.failed.Add(1)
				continue
			}
			p.ok.Add(1)
		}
	}
}

// frame builds the send frame for seq in the preallocated buffer. The ref
// is unique per send (the sequence number): a server may treat a repeated
// ref as a retry of the same message.
func (p *publisher) frame(seq, sentNs int64) []byte {
	b := appendText(p.buf[:p.prefix], p.id, seq, sentNs, p.c.r.sc.Size, p.c.r.pad)
	b = append(b, `","ref":"`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `"}`...)
	p.buf = b[:cap(b)]
	return b
}

// newPublisher preallocates the frame buffer around a constant prefix.
func newPublisher(c *client) *publisher {
	prefix := `{"type":"send","room":"` + c.roomName + `","text":"`
	buf := make([]byte, 0, len(prefix)+c.r.sc.Size+minTextSize+40)
	buf = append(buf, prefix...)
	return &publisher{c: c, id: c.idx, wake: make(chan struct{}, 1), buf: buf[:cap(buf)], prefix: len(prefix)}
}
