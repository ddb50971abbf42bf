package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/meshchat/meshchat/web/webtest"
)

// chaosClient is a WebSocket client that behaves like the browser client
// module (web/ui/static/meshchat.js) where failures are concerned: it keeps
// the node list of every welcome, reconnects with jittered backoff (to
// the other nodes first after a 1012), re-joins each room with `after` set
// to the last id it saw, resends unacknowledged sends with the same ref
// after a reconnect or an ack timeout, and retries sends answered with
// "unavailable" or "rate_limited" with backoff.
//
// Unlike the browser client it does not drop duplicate messages: it
// records every room message exactly as the server delivered it, so that
// the test can check the server's exactly-once promise. The one exception
// is the acknowledgement of a retried send, which the server sends as a
// copy of a message the connection may already hold (chat/room.go ack):
// a message carrying one of this client's refs whose id was already
// delivered counts as an ack only.
//
// DM senders (dmTo set) also send DMs like the browser client's dm():
// unique refs, resent with the same ref until acknowledged; after every
// welcome they ask for the inbox with {"type":"dms","after":<last DM
// id>} and merge the dm_history by id, as the browser does. Every DM
// frame is recorded as delivered (chaosDMRec) for checkDMs.
//
// Concurrency: run owns the connection; the publisher goroutines and the
// test read and write the recorded state under mu.
type chaosClient struct {
	user  string
	sess  webtest.Session
	home  string   // base URL of the first connection
	rooms []string // rooms joined at start
	// pubRooms are the rooms this client publishes to, in turn, one
	// message per pubEvery while publishing is set; empty for readers.
	pubRooms   []string
	pubEvery   time.Duration
	publishing atomic.Bool
	// dmTo are the users this client sends DMs to, in turn, one per
	// dmEvery while dmming is set; nil for clients without DMs.
	dmTo    []string
	dmEvery time.Duration
	dmming  atomic.Bool
	// sse makes the client connect with an events stream instead of a
	// WebSocket, resuming with Last-Event-ID, and post its sends to
	// /api/send (chaoslink_test.go); such a client sends no DMs.
	sse        bool
	http       *http.Client
	httpOnce   sync.Once
	readBuffer int            // socket receive buffer, 0 for the system's
	posts      sync.WaitGroup // posts in flight
	// stallUntil (Unix ns) holds the reader back, as a slow client's.
	stallUntil atomic.Int64
	ctx        context.Context // run's
	cuts       atomic.Int64    // connections ended by cut
	// tick is how often the client retries what is due; 0 means 20ms.
	tick time.Duration
	// pad is appended to the text of each send, to make messages big.
	pad string

	mu      sync.Mutex
	nodes   []string  // from the last welcome
	current string    // node of the live (or last) connection
	live    chaosLink // the live connection, or nil
	// lastEvent is the id of the last event of an events stream that had
	// one: its resume point.
	lastEvent string
	node      string // its name
	online    bool   // welcomed on a live connection
	room      map[string]*chaosRoom
	pending   map[string]*chaosSend // ref -> unacknowledged send
	order     []string              // refs in creation order (may hold acked ones)
	acks      map[string]chaosAck   // ref -> acknowledgement
	seq       int
	outages   []*chaosOutage
	held      time.Duration // handshake time of the live connection's dial
	lastMsg   time.Time     // when the last message (or joined) arrived
	events    []string      // connection-level history, for failure reports
	problems  []string      // protocol violations seen by this client
	// DM inbox: every DM frame as delivered, the resume requests and
	// their answers, and the acknowledgements of this client's DMs.
	dms         []chaosDMRec
	dmSeen      map[string]bool // ids received
	dmKeys      map[string]bool // from+"\x00"+text received
	dmLast      string          // id to resume after
	dmSynced    bool            // dm_history answered on the live connection
	dmReq       string          // ref of the dms request in flight
	dmReqAft    string
	dmReqDue    time.Time
	dmReqTries  int
	dmHists     []chaosDMHist
	dmAcks      map[string]chaosAck // ref -> acknowledgement
	dmReAcks    int
	dmMaxAckLat time.Duration
	// Counters.
	unavailable, rateLimited, joinErrors, resends, reAcks int
	lateErrors                                            int // transient errors for resends already acknowledged
	abandoned                                             int // silent connections given up (heartbeat)
	dmUnavailable, dmResends, dmReqErrors                 int
	lastAck                                               time.Time
	maxAckGap, maxAckLatency                              time.Duration
	maxAckGapAt                                           time.Time
}

type chaosRoom struct {
	ids     []string // room message ids in delivery order, duplicates kept
	seen    map[string]bool
	lastID  string
	joined  bool // on the live connection
	ever    bool
	joinRef string // ref of the join in flight ("" when none)
	joinAft string // its after
	joinDue time.Time
	tries   int
	joins   []chaosJoin
}

type chaosJoin struct {
	at        time.Time
	rejoin    bool
	recovered bool
	node      string
	history   int
	after     string
}

type chaosSend struct {
	ref, room, text string
	to              string // DM recipient; "" for a room send
	created         time.Time
	conn            int       // connection it was last sent on (0: never)
	due             time.Time // when to send again on that connection
	tries           int       // retryable errors so far
	tx              int       // transmissions
}

type chaosAck struct {
	id, room, text string
	to             string // DMs
	tx             int    // transmissions before the ack (DMs)
	created, at    time.Time
}

// chaosDMRec is one DM as a client received it: live (a "dm" frame) or
// in a dm_history, on connection conn.
type chaosDMRec struct {
	id, from, to, text, ref string
	conn                    int
	hist                    bool
}

// chaosDMHist is the answer to one dms request.
type chaosDMHist struct {
	at        time.Time
	node      string
	after     string
	recovered bool
	history   int
}

// chaosOutage is one lost connection and how the client came back.
type chaosOutage struct {
	at       time.Time // connection ended
	code     int       // close code, 0 without a close frame
	node     string    // node it was on
	welcome  time.Time // first welcome after it
	newNode  string
	rejoined time.Time // every room joined again (and the DM inbox resumed)
	// held is how long the node that welcomed the client held its
	// handshake: the server waits for the user's DM inbox while the
	// cluster replaces a failed node (chat.Hub.Connect).
	held     time.Duration
	chatting time.Time // first live message or ack after rejoined
	// Connection attempts before the welcome: refused by a live node
	// (HTTP 503: the server could not serve the user yet) or failed
	// otherwise (a dead node).
	refused, failed int
	lastRefused     time.Time
}

const (
	chaosAckTimeout     = 5 * time.Second
	chaosJoinTimeout    = 15 * time.Second
	chaosConnectTimeout = 5 * time.Second // meshchat.js connectTimeout
	chaosBackoffCap     = 5 * time.Second
	chaosPingAfter      = 25 * time.Second // meshchat.js pingInterval
	chaosPongTimeout    = 10 * time.Second // meshchat.js pongTimeout
)

func newChaosClient(user string, sess webtest.Session, home string, rooms []string) *chaosClient {
	c := &chaosClient{
		user: user, sess: sess, home: home, rooms: rooms, current: home,
		room:    map[string]*chaosRoom{},
		pending: map[string]*chaosSend{},
		acks:    map[string]chaosAck{},
		dmSeen:  map[string]bool{},
		dmKeys:  map[string]bool{},
		dmAcks:  map[string]chaosAck{},
	}
	for _, r := range rooms {
		c.room[r] = &chaosRoom{seen: map[string]bool{}}
	}
	return c
}

func (c *chaosClient) eventf(format string, args ...any) {
	c.events = append(c.events, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

func (c *chaosClient) problemf(format string, args ...any) {
	c.problems = append(c.problems, c.user+": "+fmt.Sprintf(format, args...))
	c.eventf("PROBLEM "+format, args...)
}

// run connects and reconnects until ctx ends.
func (c *chaosClient) run(ctx context.Context) {
	c.ctx = ctx
	defer c.posts.Wait()
	base := c.home
	attempt, idx := 0, 0
	var cands []string
	connID := 0
	for ctx.Err() == nil {
		connID++
		dialed := time.Now()
		link, status, err := c.dial(ctx, base, connID)
		if err != nil {
			c.mu.Lock()
			c.eventf("dial %s failed: %v", base, err)
			if o := c.openOutage(); o != nil && o.welcome.IsZero() {
				if status == http.StatusServiceUnavailable {
					o.refused++
					o.lastRefused = time.Now()
				} else {
					o.failed++
				}
			}
			if len(cands) == 0 {
				cands = c.candidatesLocked(false)
			}
			idx++
			base = cands[idx%len(cands)]
			c.mu.Unlock()
			attempt++
			if !sleepCtx(ctx, randDur(min(chaosBackoffCap, 250*time.Millisecond<<attempt))) {
				return
			}
			continue
		}
		c.mu.Lock()
		c.held = time.Since(dialed)
		c.mu.Unlock()
		code, welcomed := c.session(ctx, link, base, connID)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if welcomed {
			// A connection that worked: start over from the node it
			// was on, or from the others when it announced a restart.
			attempt, idx = 0, 0
			cands = c.candidatesLocked(code == 1012)
			c.outages = append(c.outages, &chaosOutage{at: time.Now(), code: code, node: c.node})
			c.eventf("connection to %s (%s) ended with %d", c.node, base, code)
		} else {
			if len(cands) == 0 {
				cands = c.candidatesLocked(false)
			}
			idx++
			c.eventf("connection to %s ended with %d before welcome", base, code)
		}
		base = cands[idx%len(cands)]
		c.mu.Unlock()
		var delay time.Duration
		if attempt == 0 {
			delay = 100*time.Millisecond + randDur(200*time.Millisecond)
		} else {
			delay = randDur(min(chaosBackoffCap, 250*time.Millisecond<<attempt))
		}
		attempt++
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// candidatesLocked lists where to reconnect: the current node, then the
// others of the last welcome; with elsewhere the current node goes last.
func (c *chaosClient) candidatesLocked(elsewhere bool) []string {
	var list []string
	for _, n := range c.nodes {
		if n != c.current && !slices.Contains(list, n) {
			list = append(list, n)
		}
	}
	if elsewhere {
		return append(list, c.current)
	}
	return append([]string{c.current}, list...)
}

// dial opens a connection on base: /ws, or an events stream resuming
// after the last event id; status is the HTTP status of a refused
// handshake (0 when there was no answer).
func (c *chaosClient) dial(ctx context.Context, base string, connID int) (chaosLink, int, error) {
	if c.sse {
		c.mu.Lock()
		resume := c.lastEvent
		c.mu.Unlock()
		return c.dialEvents(ctx, base, resume, connID)
	}
	h := http.Header{}
	for _, ck := range c.sess.Cookies {
		h.Add("Cookie", ck.Name+"="+ck.Value)
	}
	d := websocket.Dialer{HandshakeTimeout: chaosConnectTimeout, NetDialContext: c.dialer().DialContext}
	ws, resp, err := d.DialContext(ctx, wsURL(base), h)
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, 0, err
	}
	return &wsLink{ws: ws, c: c}, 0, nil
}

// dialer opens the client's TCP connections. A small receive buffer
// (readBuffer) is set before the connection is made, so that the window
// the client advertises never exceeds it: shrunk afterwards, the kernel
// drops what the larger window let in, and the node's retransmissions
// crawl.
func (c *chaosClient) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: chaosConnectTimeout}
	if n := c.readBuffer; n > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
			}); cerr != nil {
				return cerr
			}
			return err
		}
	}
	return d
}

// session serves one connection until it ends; it reports the close code
// (0 when there was no close frame) and whether a welcome arrived.
func (c *chaosClient) session(ctx context.Context, link chaosLink, base string, connID int) (int, bool) {
	frames := make(chan webtest.Frame, 256)
	done := make(chan struct{})
	var readErr error
	go func() {
		defer close(frames)
		readErr = link.read(func(f webtest.Frame) {
			select {
			case frames <- f:
			case <-done:
			}
		})
	}()
	c.mu.Lock()
	c.live = link
	c.mu.Unlock()
	defer func() {
		close(done)
		link.close()
		for range frames {
		}
		c.stallUntil.Store(0) // a stall lasts until the server lets go
		c.mu.Lock()
		c.online, c.live = false, nil
		for _, r := range c.room {
			r.joined, r.joinRef = false, ""
		}
		c.dmSynced, c.dmReq, c.dmReqTries, c.dmReqDue = false, "", 0, time.Time{}
		c.mu.Unlock()
	}()

	welcomed := false
	tick := time.NewTicker(cmp.Or(c.tick, 20*time.Millisecond))
	defer tick.Stop()
	// The heartbeat, as the browser client's: a connection silent for
	// chaosPingAfter is probed with a ping (an events stream has the
	// node's keepalives instead), and abandoned when still silent
	// chaosPongTimeout later. A stall holds the clock, as it holds a
	// slow client's whole loop.
	heard, pinged := time.Now(), false
	var frozen time.Time // when a stall stopped the clock, zero when running
	for {
		select {
		case f, ok := <-frames:
			heard, pinged = time.Now(), false
			if !ok {
				code := 0
				var ce *websocket.CloseError
				if errors.As(readErr, &ce) {
					code = ce.Code
				}
				return code, welcomed
			}
			c.mu.Lock()
			switch f.Str("type") {
			case "message", "joined", "welcome":
				c.lastMsg = time.Now()
			}
			if f.Str("type") == "welcome" {
				welcomed = true
			}
			if id := f.EventID(); id != "" {
				c.lastEvent = id
			}
			out := c.handleLocked(f, base, connID)
			c.mu.Unlock()
			if !link.write(out) {
				link.close()
			}
		case <-tick.C:
			if !welcomed {
				continue
			}
			now := time.Now()
			stallEnd := time.Unix(0, c.stallUntil.Load())
			if now.Before(stallEnd) {
				// A stalled client's whole loop stands still, its
				// timers too: a join or send is not given up on for
				// an answer the client could not read.
				if frozen.IsZero() {
					frozen = now
				}
				continue
			}
			c.mu.Lock()
			if !frozen.IsZero() {
				c.postponeLocked(now.Sub(frozen))
				frozen = time.Time{}
			}
			quiet := now.Sub(later(heard, stallEnd))
			out := c.tickLocked(now, connID)
			switch {
			case quiet > chaosPingAfter+chaosPongTimeout:
				c.abandoned++
				c.eventf("silent for %v: abandoning the connection", quiet.Round(time.Millisecond))
				c.mu.Unlock()
				link.close()
				continue
			case quiet > chaosPingAfter && !pinged && !c.sse:
				pinged = true
				c.seq++
				out = append(out, map[string]string{"type": "ping", "ref": fmt.Sprintf("p:%d", c.seq)})
			}
			c.mu.Unlock()
			if !link.write(out) {
				link.close()
			}
		case <-ctx.Done():
			if ws, ok := link.(*wsLink); ok {
				_ = ws.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			}
			return -1, welcomed
		}
	}
}

// postponeLocked moves every timeout and retry of the client d later:
// the time it stood still.
func (c *chaosClient) postponeLocked(d time.Duration) {
	for _, r := range c.room {
		r.joinDue = r.joinDue.Add(d)
	}
	c.dmReqDue = c.dmReqDue.Add(d)
	for _, p := range c.pending {
		p.due = p.due.Add(d)
	}
}

// cut ends the live connection, as a user's lost network would: the
// client reconnects and resumes.
func (c *chaosClient) cut() bool {
	c.mu.Lock()
	l := c.live
	c.mu.Unlock()
	if l == nil {
		return false
	}
	c.cuts.Add(1)
	l.close()
	return true
}

// stall holds the client's reader back for d, or until its connection
// ends, as a slow client's: the server's queue for it fills, and the
// server cuts it off; the client then resumes at its usual pace.
func (c *chaosClient) stall(d time.Duration) {
	c.stallUntil.Store(time.Now().Add(d).UnixNano())
}

// stallPoint waits, before a read, while the client stalls.
func (c *chaosClient) stallPoint() {
	if d := time.Until(time.Unix(0, c.stallUntil.Load())); d > 0 {
		sleepCtx(c.ctx, d)
	}
}

// handleLocked applies one server frame and returns the frames to send.
func (c *chaosClient) handleLocked(f webtest.Frame, base string, connID int) []any {
	now := time.Now()
	switch f.Str("type") {
	case "welcome":
		c.online = true
		c.current = base
		c.node = f.Str("node")
		if raw, ok := f["nodes"].([]any); ok {
			c.nodes = c.nodes[:0]
			for _, n := range raw {
				if s, ok := n.(string); ok {
					c.nodes = append(c.nodes, s)
				}
			}
		}
		if o := c.openOutage(); o != nil && o.welcome.IsZero() {
			o.welcome, o.newNode, o.held = now, c.node, c.held
		}
		c.eventf("welcome from %s (%s) after a %v handshake, nodes %v", c.node, base, c.held.Round(time.Millisecond), c.nodes)
		var out []any
		for _, name := range c.rooms {
			if c.sse {
				// The stream joins by itself, after the resume point.
				r := c.room[name]
				r.joinRef, r.joinAft, r.joinDue = "sse", r.lastID, now.Add(chaosJoinTimeout)
				continue
			}
			out = append(out, c.joinLocked(name, now))
		}
		if c.dmTo != nil {
			// As the browser client: resume the inbox, then resend the
			// DMs not acknowledged yet (DMs need no join).
			out = append(out, c.dmsLocked(now))
			out = append(out, c.flushDMsLocked(now, connID)...)
		}
		return out
	case "joined":
		name := f.Str("room")
		r := c.room[name]
		if r == nil || r.joinRef == "" {
			c.problemf("unexpected joined %v", f)
			return nil
		}
		hist, _ := f["history"].([]any)
		after := r.joinAft
		j := chaosJoin{at: now, rejoin: r.ever, recovered: f["recovered"] == true, node: c.node, history: len(hist), after: after}
		r.joins = append(r.joins, j)
		r.joined, r.ever, r.joinRef, r.tries = true, true, "", 0
		for _, h := range hist {
			if m, ok := h.(map[string]any); ok {
				c.recordLocked(name, r, webtest.Frame(m), false)
			}
		}
		c.eventf("joined %s on %s: rejoin=%v recovered=%v after=%q history=%d", name, c.node, j.rejoin, j.recovered, after, j.history)
		if o := c.openOutage(); o != nil && o.rejoined.IsZero() && c.allJoinedLocked() {
			o.rejoined = now
		}
		return c.flushLocked(name, now, connID)
	case "dm":
		c.recordDMLocked(f, connID, false)
		if o := c.openOutage(); o != nil && !o.rejoined.IsZero() && o.chatting.IsZero() {
			o.chatting = now
		}
	case "dm_history":
		if c.sse {
			return nil // the stream's own inbox request: this client sends no DMs
		}
		if c.dmTo == nil || c.dmReq == "" {
			c.problemf("dm_history without a dms request in flight")
			return nil
		}
		hist, _ := f["history"].([]any)
		h := chaosDMHist{at: now, node: c.node, after: c.dmReqAft, recovered: f["recovered"] == true, history: len(hist)}
		c.dmHists = append(c.dmHists, h)
		c.dmReq, c.dmSynced, c.dmReqTries = "", true, 0
		for _, d := range hist {
			if m, ok := d.(map[string]any); ok {
				c.recordDMLocked(webtest.Frame(m), connID, true)
			}
		}
		c.eventf("dm_history on %s: recovered=%v after=%q history=%d", c.node, h.recovered, h.after, h.history)
		if o := c.openOutage(); o != nil && o.rejoined.IsZero() && c.allJoinedLocked() {
			o.rejoined = now
		}
	case "message":
		name := f.Str("room")
		r := c.room[name]
		if r == nil || !r.joined {
			c.problemf("message for a room not joined: %v", f)
			return nil
		}
		c.recordLocked(name, r, f, true)
		if o := c.openOutage(); o != nil && !o.rejoined.IsZero() && o.chatting.IsZero() {
			o.chatting = now
		}
	case "error":
		ref, code := f.Str("ref"), f.Str("code")
		if strings.HasPrefix(ref, "j:") {
			name := strings.SplitN(ref, ":", 3)[1]
			r := c.room[name]
			if r == nil || r.joinRef != ref {
				c.problemf("error for a join not in flight: %v", f)
				return nil
			}
			c.joinErrors++
			r.joinRef = ""
			c.retryLater("join "+name, f, now, &r.tries, &r.joinDue)
			return nil
		}
		if strings.HasPrefix(ref, "m:") {
			if ref != c.dmReq {
				c.problemf("error for a dms request not in flight: %v", f)
				return nil
			}
			c.dmReqErrors++
			c.dmReq = ""
			c.retryLater("dms", f, now, &c.dmReqTries, &c.dmReqDue)
			return nil
		}
		p := c.pending[ref]
		if p == nil {
			_, acked := c.acks[ref]
			_, dmAcked := c.dmAcks[ref]
			if (acked || dmAcked) && (code == "unavailable" || code == "rate_limited") {
				// A resend's late refusal, after an earlier try was
				// acknowledged (an overloaded machine stretches the ack
				// past its timeout): the message is stored, and the
				// refusal changes nothing.
				c.lateErrors++
				return nil
			}
			c.problemf("error frame not tied to a pending send: %v", f)
			return nil
		}
		switch {
		case code == "unavailable" && p.to != "":
			c.dmUnavailable++
		case code == "unavailable":
			c.unavailable++
		case code == "rate_limited":
			c.rateLimited++
		default:
			c.problemf("send %s rejected: %v", ref, f)
			delete(c.pending, ref)
			return nil
		}
		p.tries++
		p.due = now.Add(randDur(min(chaosBackoffCap, 250*time.Millisecond<<p.tries)))
	case "presence", "typing", "pong", "keepalive", "close":
	default:
		c.problemf("unexpected frame %v", f)
	}
	return nil
}

// recordLocked adds a room message to the room's sequence, or counts it as
// the ack of a retried send whose message the client already holds.
func (c *chaosClient) recordLocked(name string, r *chaosRoom, f webtest.Frame, live bool) {
	id, ref := f.Str("id"), f.Str("ref")
	if id == "" {
		c.problemf("message without id: %v", f)
		return
	}
	if ref != "" {
		c.ackLocked(ref, id, name, f.Str("text"))
		if r.seen[id] {
			c.reAcks++
			return
		}
	}
	r.ids = append(r.ids, id)
	r.seen[id] = true
	r.lastID = id
}

func (c *chaosClient) ackLocked(ref, id, room, text string) {
	now := time.Now()
	if prev, ok := c.acks[ref]; ok {
		if prev.id != id {
			c.problemf("ref %s acked as %s, then as %s", ref, prev.id, id)
		}
		return
	}
	p := c.pending[ref]
	if p == nil {
		c.problemf("ack for unknown ref %s (id %s)", ref, id)
		return
	}
	if p.text != text || p.room != room {
		c.problemf("ack %s for %q in %s, sent %q to %s", ref, text, room, p.text, p.room)
	}
	delete(c.pending, ref)
	c.acks[ref] = chaosAck{id: id, room: room, text: text, created: p.created, at: now}
	if lat := now.Sub(p.created); lat > c.maxAckLatency {
		c.maxAckLatency = lat
	}
	if !c.lastAck.IsZero() {
		if gap := now.Sub(c.lastAck); gap > c.maxAckGap {
			c.maxAckGap, c.maxAckGapAt = gap, now
		}
	}
	c.lastAck = now
	if o := c.openOutage(); o != nil && !o.rejoined.IsZero() && o.chatting.IsZero() {
		o.chatting = now
	}
}

func (c *chaosClient) joinLocked(name string, now time.Time) map[string]string {
	r := c.room[name]
	c.seq++
	r.joinRef = fmt.Sprintf("j:%s:%d", name, c.seq)
	r.joinDue = now.Add(chaosJoinTimeout)
	r.joinAft = r.lastID
	f := map[string]string{"type": "join", "room": name, "ref": r.joinRef}
	if r.lastID != "" {
		f["after"] = r.lastID
	}
	return f
}

// flushLocked sends the room's pending sends that the live connection has
// not taken yet (all of them right after a join).
func (c *chaosClient) flushLocked(room string, now time.Time, connID int) []any {
	var out []any
	for _, ref := range c.order {
		p := c.pending[ref]
		if p == nil || p.room != room || p.conn == connID {
			continue
		}
		out = append(out, c.transmitLocked(p, now, connID))
	}
	return out
}

func (c *chaosClient) transmitLocked(p *chaosSend, now time.Time, connID int) map[string]string {
	if p.conn != 0 {
		if p.to != "" {
			c.dmResends++
		} else {
			c.resends++
		}
	}
	p.tx++
	p.conn, p.due = connID, now.Add(chaosAckTimeout)
	if p.to != "" {
		return map[string]string{"type": "dm", "to": p.to, "text": p.text, "ref": p.ref}
	}
	return map[string]string{"type": "send", "room": p.room, "text": p.text, "ref": p.ref}
}

// tickLocked retries joins and sends that are due.
func (c *chaosClient) tickLocked(now time.Time, connID int) []any {
	var out []any
	for _, name := range c.rooms {
		r := c.room[name]
		switch {
		case r.joined:
		case r.joinRef != "" && now.After(r.joinDue):
			c.problemf("no answer to join %s (%s) within %v", name, r.joinRef, chaosJoinTimeout)
			out = append(out, c.joinLocked(name, now))
		case r.joinRef == "" && now.After(r.joinDue):
			out = append(out, c.joinLocked(name, now))
		}
	}
	if c.dmTo != nil && !c.dmSynced {
		switch {
		case c.dmReq != "" && now.After(c.dmReqDue):
			c.problemf("no answer to dms (%s) within %v", c.dmReq, chaosJoinTimeout)
			out = append(out, c.dmsLocked(now))
		case c.dmReq == "" && now.After(c.dmReqDue):
			out = append(out, c.dmsLocked(now))
		}
	}
	live := c.order[:0]
	for _, ref := range c.order {
		p := c.pending[ref]
		if p == nil {
			continue
		}
		live = append(live, ref)
		if p.to == "" && !c.room[p.room].joined {
			continue
		}
		if p.conn != connID || now.After(p.due) {
			out = append(out, c.transmitLocked(p, now, connID))
		}
	}
	c.order = live
	return out
}

// publish creates sends while publishing is set, one per pubEvery, until
// ctx ends. The sends go out on the next tick of the live connection, or
// wait for the next one, as a user's typed messages would.
func (c *chaosClient) publish(ctx context.Context) {
	if len(c.pubRooms) > 0 {
		c.sendEvery(ctx, c.pubEvery, &c.publishing, func(n int, now time.Time) *chaosSend {
			ref := fmt.Sprintf("%s-%d", c.user, n)
			return &chaosSend{ref: ref, room: c.pubRooms[n%len(c.pubRooms)], text: fmt.Sprintf("%s says %d", c.user, n) + c.pad, created: now}
		})
	}
}

// sendEvery queues the send that next makes of its sequence number (1, 2,
// ...) once per period while on is set, until ctx ends.
func (c *chaosClient) sendEvery(ctx context.Context, period time.Duration, on *atomic.Bool, next func(n int, now time.Time) *chaosSend) {
	t := time.NewTicker(period)
	defer t.Stop()
	for n := 1; ; {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !on.Load() {
				continue
			}
			snd := next(n, now)
			n++
			c.mu.Lock()
			c.pending[snd.ref] = snd
			c.order = append(c.order, snd.ref)
			c.mu.Unlock()
		}
	}
}

// dmsLocked asks for the DM inbox after the last DM id received.
func (c *chaosClient) dmsLocked(now time.Time) map[string]string {
	c.seq++
	c.dmReq = fmt.Sprintf("m:%d", c.seq)
	c.dmReqDue = now.Add(chaosJoinTimeout)
	c.dmReqAft = c.dmLast
	f := map[string]string{"type": "dms", "ref": c.dmReq}
	if c.dmLast != "" {
		f["after"] = c.dmLast
	}
	return f
}

// flushDMsLocked sends the pending DMs the live connection has not taken.
func (c *chaosClient) flushDMsLocked(now time.Time, connID int) []any {
	var out []any
	for _, ref := range c.order {
		if p := c.pending[ref]; p != nil && p.to != "" && p.conn != connID {
			out = append(out, c.transmitLocked(p, now, connID))
		}
	}
	return out
}

// recordDMLocked records a DM as delivered. A copy carrying one of this
// client's refs acknowledges that DM. The resume point only moves on ids
// not seen before: the ack of a retried DM repeats an older id.
func (c *chaosClient) recordDMLocked(f webtest.Frame, connID int, hist bool) {
	d := chaosDMRec{id: f.Str("id"), from: f.Str("from"), to: f.Str("to"), text: f.Str("text"), ref: f.Str("ref"), conn: connID, hist: hist}
	if d.id == "" {
		c.problemf("DM without id: %v", f)
		return
	}
	c.dms = append(c.dms, d)
	if d.ref != "" && d.from == c.user {
		c.dmAckLocked(d)
	}
	if c.dmSeen[d.id] {
		if d.ref != "" {
			c.dmReAcks++
		}
		return
	}
	c.dmSeen[d.id] = true
	c.dmKeys[d.from+"\x00"+d.text] = true
	c.dmLast = d.id
}

func (c *chaosClient) dmAckLocked(d chaosDMRec) {
	now := time.Now()
	if prev, ok := c.dmAcks[d.ref]; ok {
		if prev.id != d.id {
			c.problemf("DM ref %s acked as %s, then as %s", d.ref, prev.id, d.id)
		}
		return
	}
	p := c.pending[d.ref]
	if p == nil || p.to == "" {
		c.problemf("DM ack for unknown ref %s (id %s)", d.ref, d.id)
		return
	}
	if p.text != d.text || p.to != d.to {
		c.problemf("DM ack %s for %q to %s, sent %q to %s", d.ref, d.text, d.to, p.text, p.to)
	}
	delete(c.pending, d.ref)
	c.dmAcks[d.ref] = chaosAck{id: d.id, to: d.to, text: d.text, tx: p.tx, created: p.created, at: now}
	c.dmMaxAckLat = max(c.dmMaxAckLat, now.Sub(p.created))
	if o := c.openOutage(); o != nil && !o.rejoined.IsZero() && o.chatting.IsZero() {
		o.chatting = now
	}
}

// dmPublish creates DMs while dmming is set, one per dmEvery, to the
// users of dmTo in turn, each with a unique ref that its text repeats.
func (c *chaosClient) dmPublish(ctx context.Context) {
	if len(c.dmTo) > 0 {
		c.sendEvery(ctx, c.dmEvery, &c.dmming, func(n int, now time.Time) *chaosSend {
			ref := fmt.Sprintf("%s-d%d", c.user, n)
			return &chaosSend{ref: ref, to: c.dmTo[n%len(c.dmTo)], text: "dm " + ref, created: now}
		})
	}
}

// dmAckedSince is how many of the client's DMs created after t have been
// acknowledged.
func (c *chaosClient) dmAckedSince(t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return createdSince(c.dmAcks, t)
}

// createdSince counts the acknowledgements of sends created at or after t.
func createdSince(acks map[string]chaosAck, t time.Time) int {
	n := 0
	for _, a := range acks {
		if !a.created.Before(t) {
			n++
		}
	}
	return n
}

// hasDM reports whether the client has received a DM with text from.
func (c *chaosClient) hasDM(from, text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dmKeys[from+"\x00"+text]
}

func (c *chaosClient) openOutage() *chaosOutage {
	if len(c.outages) == 0 {
		return nil
	}
	return c.outages[len(c.outages)-1]
}

// allJoinedLocked reports whether the live connection is in every room
// and, for a DM sender, has its inbox resumed.
func (c *chaosClient) allJoinedLocked() bool {
	for _, r := range c.room {
		if !r.joined {
			return false
		}
	}
	return c.dmTo == nil || c.dmSynced
}

// settled reports whether the client is connected, in every room, and has
// nothing left to send.
func (c *chaosClient) settled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.online && c.allJoinedLocked() && len(c.pending) == 0
}

// has reports whether the client has received every id of want in room.
func (c *chaosClient) has(room string, want map[string]bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.room[room]
	if r == nil {
		return true
	}
	for id := range want {
		if !r.seen[id] {
			return false
		}
	}
	return true
}

func (c *chaosClient) received(room string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.room[room]; r != nil {
		return len(r.ids)
	}
	return 0
}

// ackedSince is how many of the client's sends created after t have been
// acknowledged.
func (c *chaosClient) ackedSince(t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return createdSince(c.acks, t)
}

// retryLater schedules the retry of a request for what that failed with
// f: one more try, due after a capped, jittered back-off. A code other
// than a transient one is a problem.
func (c *chaosClient) retryLater(what string, f webtest.Frame, now time.Time, tries *int, due *time.Time) {
	*tries++
	*due = now.Add(randDur(min(chaosBackoffCap, 250*time.Millisecond<<*tries)))
	c.eventf("%s failed: %v", what, f)
	if code := f.Str("code"); code != "unavailable" && code != "rate_limited" {
		c.problemf("%s failed: %v", what, f)
	}
}

func randDur(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// sleepCtx waits d (client back-off, not synchronisation) or until ctx
// ends; false means ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
