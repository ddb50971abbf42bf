package chat

import (
	"context"
	"sync"
	"time"
)

// frameOverhead is what one queued frame costs on top of its bytes in
// the outbound queue accounting (slice header, WebSocket framing).
const frameOverhead = 32

// drainKeep is the outbound queue capacity, in frames, that Drain keeps
// for the next frames; a larger backing array is let go.
const drainKeep = 8

// Client is one connection of a user to the hub. The web layer reads
// frames from the socket into Handle, and writes what the hub queues: it
// registers a function with SetNotify, which is called whenever frames
// are queued or the client is disconnected, takes frames with Drain, and
// once Disconnected (after draining what is left) closes the socket with
// CloseReason. Close must be called once the connection has ended.
//
// Handle, Reject and Close are serialised; Drain, Disconnected,
// CloseReason and SendError are safe from any goroutine.
type Client struct {
	hub     *Hub
	id      string
	user    string
	session string

	op          sync.Mutex // serialises Handle and Close
	rooms       map[string]*joined
	inbox       *room
	inboxMember *member
	limiter     limiter
	cleaned     bool
	// publishSeq numbers the connection's sends without a ref, for
	// their idempotency keys; impatientUntil is when requests may wait
	// out an unavailable broker again (see Hub.patiently).
	publishSeq     uint64
	impatientUntil time.Time

	mu     sync.Mutex // guards what follows: the outbound queue
	queue  [][]byte
	queued int // bytes, including frameOverhead per frame
	closed bool
	code   int
	reason string
	notify func() // see SetNotify
	// opCancel, the context of the frame Handle is working on, is
	// cancelled on disconnect.
	opCancel context.CancelFunc
}

// ID returns the connection's cluster-unique id.
func (c *Client) ID() string { return c.id }

// User returns the user the connection belongs to.
func (c *Client) User() string { return c.user }

// Session returns the session id the connection was opened with.
func (c *Client) Session() string { return c.session }

// SetNotify registers fn to be called whenever frames are queued and
// when the client is disconnected, after the client's own lock is
// released, from whichever goroutine did it: the fan-out calls it with a
// room's lock held. So fn must not block nor call into the hub or the
// client except Disconnected; it takes leaf locks at most and typically
// hands the writing to a goroutine of its own. When
// frames are already queued or the client is already disconnected, fn is
// called once before SetNotify returns. Call it at most once, before the
// connection's writer starts.
func (c *Client) SetNotify(fn func()) {
	c.mu.Lock()
	c.notify = fn
	pending := len(c.queue) > 0 || c.closed
	c.mu.Unlock()
	if pending && fn != nil {
		fn()
	}
}

// Disconnected reports whether the hub disconnected the client (slow
// consumer, logout, shutdown) or Close was called.
func (c *Client) Disconnected() bool { return c.isClosed() }

// CloseReason returns the WebSocket close code and reason to send once
// the client is disconnected.
func (c *Client) CloseReason() (code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		return 0, ""
	}
	return c.code, c.reason
}

// Drain moves every queued frame to dst and returns it. Frames are
// shared between connections and must not be modified.
func (c *Client) Drain(dst [][]byte) [][]byte {
	c.mu.Lock()
	dst = append(dst, c.queue...)
	clear(c.queue)
	c.queue = c.queue[:0]
	if cap(c.queue) > drainKeep {
		// A burst (the presence of a room filling up) grew it; an idle
		// connection should not keep that.
		c.queue = nil
	}
	c.queued = 0
	c.mu.Unlock()
	return dst
}

// Queued reports how many bytes are waiting in the outbound queue.
func (c *Client) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// SendError queues an error frame for this connection.
func (c *Client) SendError(code, message, ref string) {
	c.enqueue(ErrorFrame(code, message, ref))
}

// enqueue appends a frame to the outbound queue. It never blocks: a
// client whose queue would overflow is disconnected as a slow consumer.
func (c *Client) enqueue(f []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	n := len(f) + frameOverhead
	if c.queued+n > c.hub.queueBytes {
		c.killLocked(CloseSlowConsumer, "slow_consumer")
		notify := c.notify
		c.mu.Unlock()
		if notify != nil {
			notify()
		}
		return
	}
	c.queue = append(c.queue, f)
	c.queued += n
	notify := c.notify
	c.mu.Unlock()
	if notify != nil {
		notify()
	}
}

// disconnect ends the client with a close code; the web layer sends it.
func (c *Client) disconnect(code int, reason string) {
	c.mu.Lock()
	killed := c.killLocked(code, reason)
	notify := c.notify
	c.mu.Unlock()
	if killed && notify != nil {
		notify()
	}
}

// killLocked marks the client disconnected and reports whether it was
// not already; the caller calls notify once it has let go of mu.
func (c *Client) killLocked(code int, reason string) bool {
	if c.closed {
		return false
	}
	c.closed = true
	c.code, c.reason = code, reason
	c.hub.stats.closed(code)
	if code == CloseSlowConsumer {
		c.hub.slow.add(SlowConsumer{User: c.user, Conn: c.id, At: c.hub.now()})
		// What is queued is stale; the client resumes from history.
		clear(c.queue)
		c.queue = nil
		c.queued = 0
	}
	if c.opCancel != nil {
		c.opCancel()
	}
	return true
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Handle processes one frame from the client. Failures of the frame are
// answered with error frames on the connection; the returned error is
// non-nil only when the client is closed. Handle may wait on the broker;
// it returns early when ctx ends or the client is disconnected.
func (c *Client) Handle(ctx context.Context, data []byte) error {
	c.op.Lock()
	defer c.op.Unlock()
	if c.cleaned || c.isClosed() {
		return ErrClosed
	}
	f, ferr := decodeFrame(data, c.hub.maxText)
	if !c.limiter.allow(c.hub.now()) {
		c.reject(CodeRateLimited, "too many frames, slow down", f.Ref)
		return nil
	}
	if ferr != nil {
		c.reject(ferr.code, ferr.msg, f.Ref)
		return nil
	}
	// The frame's work ends early when the client is disconnected.
	// (context.AfterFunc on a client context would leave a map of
	// children behind on every connection that ever sent a frame.)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.opCancel = cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.opCancel = nil
		c.mu.Unlock()
	}()

	var err *frameError
	h := c.hub
	switch f.Type {
	case typeJoin:
		err = h.joinFrame(ctx, c, f.Room, f.After, f.Private)
	case typeLeave:
		err = h.leave(ctx, c, f.Room)
	case typeSend:
		err = h.send(ctx, c, f.Room, f.Text, f.Ref)
	case typeDM:
		err = h.dm(ctx, c, f.To, f.Text, f.Ref)
	case typeTyping:
		err = h.typing(ctx, c, f.Room)
	case typeDelete:
		err = h.delete(ctx, c, f.Room, f.ID, f.Ref)
	case typeDMs:
		err = h.dmHistory(ctx, c, f.After)
	case typeInvite, typeRemove:
		err = h.member(ctx, c, f.Type == typeInvite, f.Room, f.User, f.Ref)
	case typePing:
		c.enqueue(pongFrame(f.Ref))
	}
	if err != nil {
		c.reject(err.code, err.msg, f.Ref)
	}
	return nil
}

// Reject answers a frame the web layer could not hand to Handle (too
// large, binary) with an error frame of the given code. The frame still
// counts against the rate limit, so that rejected frames cannot be sent
// faster than accepted ones; over the limit the answer is rate_limited.
// The error is non-nil only when the client is closed.
func (c *Client) Reject(code, message string) error {
	c.op.Lock()
	defer c.op.Unlock()
	if c.cleaned || c.isClosed() {
		return ErrClosed
	}
	if !c.limiter.allow(c.hub.now()) {
		c.reject(CodeRateLimited, "too many frames, slow down", "")
		return nil
	}
	c.reject(code, message, "")
	return nil
}

// reject answers a frame with an error frame and counts it by code.
func (c *Client) reject(code, message, ref string) {
	c.hub.stats.reject(code)
	c.SendError(code, message, ref)
}

// Close leaves every room, releases the DM inbox and forgets the client.
// It is safe to call more than once; later calls return nil at once.
func (c *Client) Close(ctx context.Context) error {
	c.disconnect(CloseNormal, "")
	c.op.Lock()
	defer c.op.Unlock()
	if c.cleaned {
		return nil
	}
	c.cleaned = true
	h := c.hub
	for name, j := range c.rooms {
		h.leaveRoom(ctx, c, j.r)
		delete(c.rooms, name)
	}
	if c.inbox != nil {
		h.removeMember(ctx, c, c.inbox)
		c.inbox = nil
	}
	h.unregister(c)
	return nil
}
