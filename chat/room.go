package chat

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

const (
	roomKindRoom  = iota // r:<room>
	roomKindInbox        // u:<user>
)

// room is the local state of one channel this node is subscribed to: a
// chat room or a user's DM inbox.
type room struct {
	channel string
	name    string // room name, or the inbox's user
	kind    int
	refs    int // guarded by the shard's mu

	ctl        sync.Mutex // serialises subscribe/unsubscribe and presence writes
	subscribed bool       // guarded by ctl

	mu      sync.Mutex // the hot-path lock; guards what follows
	members map[*Client]*member
	// last is the newest stored publication fanned out on this node: a
	// member added later cannot be given it, nor anything before it.
	last      uint64
	lastEpoch string
	local     map[string]int // local connections per user
	// online: user -> the nodes they are on, a slice because it is
	// nearly always one node and a map per user costs several times more.
	online map[string][]string
}

// member is one connection's membership of a room.
type member struct {
	// pending members are fetching history: live frames wait in buf and
	// are released, minus those the history already holds, when the
	// history has been sent (see catchUp).
	pending  bool
	buf      []buffered
	bufBytes int
	// paging members are sent a resume page by page (sendPaged): when
	// their buffer overflows, its stored publications are dropped and
	// overflowed set, and they are read from the history again.
	paging, overflowed bool
	// last is the newest stored publication the member has been given
	// (through history or live). A broker may deliver a publication
	// after History already returned it; those and any redelivery are
	// dropped here.
	last      uint64
	lastEpoch string
	// Acks: a connection has at most one send or dm in flight (Handle
	// is serial), so one slot each is enough. acked is the last
	// publication this member got with its ref; want is a publication
	// whose Publish returned before it was delivered here, to be
	// delivered with wantRef (see ack).
	acked, want           uint64
	ackedEpoch, wantEpoch string
	wantRef               string
}

type buffered struct {
	frame  []byte
	offset uint64 // 0 for ephemeral frames
	epoch  string
}

// joined is a room held by a client; only the client's Handle/Close
// touch it.
type joined struct {
	r        *room
	m        *member
	typingAt time.Time
}

func newRoom(channel string) *room {
	r := &room{
		channel: channel,
		members: make(map[*Client]*member, 1),
	}
	switch {
	case strings.HasPrefix(channel, inboxPrefix):
		// An inbox has no presence: local and online stay nil.
		r.kind, r.name = roomKindInbox, channel[len(inboxPrefix):]
	default:
		r.kind, r.name = roomKindRoom, strings.TrimPrefix(channel, roomPrefix)
		r.local = make(map[string]int)
		r.online = make(map[string][]string)
	}
	return r
}

// put hands a frame to one member: queued when live, buffered while the
// member catches up. It reports whether the member took the frame (not a
// repeat of one it has). Called with r.mu held.
func (r *room) put(h *Hub, c *Client, m *member, f []byte, offset uint64, epoch string) bool {
	if !m.pending {
		if offset != 0 && !m.advance(offset, epoch) {
			return false
		}
		c.enqueue(f)
		return true
	}
	if m.bufBytes+len(f)+frameOverhead > h.queueBytes {
		if !m.paging {
			c.disconnect(CloseSlowConsumer, "slow_consumer")
			return false
		}
		// The stored ones are in the history, read again once the pages
		// are out; the ephemeral ones (presence, typing) are kept.
		m.buf = slices.DeleteFunc(m.buf, func(b buffered) bool { return b.offset != 0 })
		m.bufBytes = 0
		for _, b := range m.buf {
			m.bufBytes += len(b.frame) + frameOverhead
		}
		m.overflowed = true
		if offset != 0 {
			return true
		}
		if m.bufBytes+len(f)+frameOverhead > h.queueBytes {
			c.disconnect(CloseSlowConsumer, "slow_consumer")
			return false
		}
	}
	m.buf = append(m.buf, buffered{frame: f, offset: offset, epoch: epoch})
	m.bufBytes += len(f) + frameOverhead
	return true
}

// advance moves the member's position to the stored publication at
// offset in epoch and reports whether that is new to it; one it has
// (at or before its position) leaves the position where it is, so that
// what came after it is still recognised as had. Called with r.mu held.
func (m *member) advance(offset uint64, epoch string) bool {
	if offset <= m.last && epoch == m.lastEpoch {
		return false
	}
	m.last, m.lastEpoch = offset, epoch
	return true
}

// broadcastLocked sends an ephemeral frame to every member but skip.
func (r *room) broadcastLocked(h *Hub, f []byte, skip *Client) {
	for c, m := range r.members {
		if c != skip {
			r.put(h, c, m, f, 0, "")
		}
	}
}

// deliver fans a publication out to the local members.
func (r *room) deliver(h *Hub, ev event, pub transport.Publication) {
	switch ev.Kind {
	case kindMessage, kindDM, kindDelete:
		if pub.Offset == 0 {
			return
		}
		buf := make([]byte, 0, 112+len(r.name)+len(ev.User)+len(ev.To)+len(ev.ID)+len(ev.Text)+len(ev.Target)+len(pub.Epoch))
		if plain, ok := appendStored(buf, r.kind, r.name, &ev, infoOf(pub)); ok {
			r.fanOut(h, ev, pub, plain)
		}
	case kindTyping:
		if r.kind != roomKindRoom || ev.User == "" {
			return
		}
		f := typingFrame(r.name, ev.User)
		r.mu.Lock()
		for c, m := range r.members {
			if c.user != ev.User {
				r.put(h, c, m, f, 0, "")
			}
		}
		r.mu.Unlock()
	case kindDisconnect:
		if r.kind == roomKindInbox {
			r.disconnectAll()
		}
	case kindInvited:
		if r.kind == roomKindInbox && ValidName(ev.Text) && ValidName(ev.User) {
			r.mu.Lock()
			r.broadcastLocked(h, invitationFrame(ev.Text, ev.User), nil)
			r.mu.Unlock()
		}
	case kindPresence:
		// This node's own users are tracked from local connections; its
		// own notices may lag behind them and are ignored.
		if r.kind != roomKindRoom || ev.Node == h.node || ev.Node == "" || !ValidName(ev.User) {
			return
		}
		r.mu.Lock()
		if r.setOnline(ev.User, ev.Node, ev.Online) {
			r.broadcastLocked(h, presenceFrame(r.name, ev.User, ev.Online), nil)
		}
		r.mu.Unlock()
	}
}

// fanOut queues plain on every member, and the variant with ref on the
// connection that sent it. The deliveries are counted once, after the
// loop: one atomic add per publication, none per member.
func (r *room) fanOut(h *Hub, ev event, pub transport.Publication, plain []byte) {
	var refd []byte
	var n uint64
	r.mu.Lock()
	r.last, r.lastEpoch = pub.Offset, pub.Epoch
	for c, m := range r.members {
		f := plain
		switch {
		case m.acked == pub.Offset && m.ackedEpoch == pub.Epoch:
			// Acknowledged before it arrived (see ack): the member has
			// it already, with its ref. The ack of a retry may have
			// come after the member got later publications (through a
			// resume's history, while this node's subscription lagged):
			// its position only moves forward.
			if !m.pending {
				m.advance(pub.Offset, pub.Epoch)
			}
			continue
		case ev.Ref != "" && c.id == ev.Conn:
			if refd == nil {
				refd = withRef(plain, ev.Ref)
			}
			f = refd
			m.acked, m.ackedEpoch = pub.Offset, pub.Epoch
		case m.want != 0 && m.want == pub.Offset && m.wantEpoch == pub.Epoch:
			// A retry from this connection of a publication first
			// sent by another one.
			f = withRef(plain, m.wantRef)
			m.acked, m.ackedEpoch = pub.Offset, pub.Epoch
			m.want, m.wantRef = 0, ""
		}
		if r.put(h, c, m, f, pub.Offset, pub.Epoch) {
			n++
		}
	}
	r.mu.Unlock()
	if !isAnnotation(ev.Kind) {
		h.stats.deliveries.Add(n)
	}
}

// setOnline records user on node and reports whether the user's
// cluster-wide online state changed. Called with r.mu held.
func (r *room) setOnline(user, node string, on bool) bool {
	nodes := r.online[user]
	was := len(nodes) > 0
	if on {
		if !slices.Contains(nodes, node) {
			r.online[user] = append(nodes, node)
		}
		return !was
	}
	if i := slices.Index(nodes, node); i >= 0 {
		nodes = slices.Delete(nodes, i, i+1)
		r.online[user] = nodes
	}
	if len(nodes) == 0 {
		delete(r.online, user)
	}
	return was && len(nodes) == 0
}

// onlineUsers lists the users online cluster-wide, sorted. Called with
// r.mu held.
func (r *room) onlineUsers() []string {
	users := make([]string, 0, len(r.online))
	for u := range r.online {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}

// seed merges the broker's presence (other nodes only) into the room.
func (r *room) seed(self string, pres map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for user, nodes := range pres {
		if !ValidName(user) {
			continue
		}
		for _, n := range nodes {
			if n != self && n != "" {
				r.setOnline(user, n, true)
			}
		}
	}
}

func (r *room) nodeGone(h *Hub, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for user, nodes := range r.online {
		if slices.Contains(nodes, node) && r.setOnline(user, node, false) {
			r.broadcastLocked(h, presenceFrame(r.name, user, false), nil)
		}
	}
}

// brokerErr turns a broker failure into the client-visible error.
func (h *Hub) brokerErr(op string, err error) *frameError {
	if errors.Is(err, context.Canceled) && h.ctx.Err() != nil {
		return errf(CodeUnavailable, "server is shutting down")
	}
	h.stats.brokerError(strings.TrimSuffix(op, " dm"))
	h.log.Debug(op, "err", err)
	return errf(CodeUnavailable, "chat is unavailable right now, retry later")
}

// cleanupCtx is the context for undoing work when the caller's context
// may already be done.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// addMember subscribes the node to channel if needed and adds c as a
// live member (used for the DM inbox).
func (h *Hub) addMember(ctx context.Context, c *Client, channel string) (*room, *member, error) {
	r := h.acquire(channel)
	if err := h.ensureSubscribed(ctx, r); err != nil {
		cctx, cancel := cleanupCtx(ctx)
		h.release(cctx, r)
		cancel()
		return nil, nil, err
	}
	r.mu.Lock()
	m := &member{last: r.last, lastEpoch: r.lastEpoch}
	r.members[c] = m
	r.mu.Unlock()
	return r, m, nil
}

func (h *Hub) removeMember(ctx context.Context, c *Client, r *room) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	r.mu.Lock()
	delete(r.members, c)
	r.mu.Unlock()
	h.release(ctx, r)
}

// join makes c a member of room name, or, when it already is one,
// answers again with history (a resume).
func (h *Hub) join(ctx context.Context, c *Client, name, after string) *frameError {
	j := c.rooms[name]
	if j == nil {
		if len(c.rooms) >= h.maxRooms {
			return errf(CodeTooManyRooms, "too many rooms on one connection")
		}
		r := h.acquire(roomPrefix + name)
		if err := h.patiently(ctx, c, unavailableWait, func(ctx context.Context) error {
			return h.ensureSubscribed(ctx, r)
		}); err != nil {
			cctx, cancel := cleanupCtx(ctx)
			h.release(cctx, r)
			cancel()
			return h.brokerErr("subscribe", err)
		}
		m := &member{pending: true}
		r.ctl.Lock()
		r.mu.Lock()
		r.local[c.user]++
		first := r.local[c.user] == 1
		if first && r.setOnline(c.user, h.node, true) {
			r.broadcastLocked(h, presenceFrame(name, c.user, true), nil)
		}
		r.members[c] = m
		members := r.onlineUsers()
		r.mu.Unlock()
		if first {
			h.announce(ctx, r, c.user, true)
		}
		r.ctl.Unlock()
		j = &joined{r: r, m: m}
		if c.rooms == nil {
			c.rooms = make(map[string]*joined, 1)
		}
		c.rooms[name] = j
		owner := h.privateOwner(name)
		if err := h.catchUp(ctx, c, r, m, after, func(hist [][]byte, rec bool) []byte {
			return joinedFrameOf(name, members, hist, rec, owner)
		}, true); err != nil {
			cctx, cancel := cleanupCtx(ctx)
			h.leaveRoom(cctx, c, r)
			cancel()
			delete(c.rooms, name)
			return err
		}
		h.stats.joins.Add(1)
		return nil
	}
	r, m := j.r, j.m
	r.mu.Lock()
	m.pending = true
	members := r.onlineUsers()
	r.mu.Unlock()
	owner := h.privateOwner(name)
	return h.catchUp(ctx, c, r, m, after, func(hist [][]byte, rec bool) []byte {
		return joinedFrameOf(name, members, hist, rec, owner)
	}, false)
}

// catchUp sends the history of r after the id "after" (or the latest
// page) in the frame made by first, then releases the frames buffered
// meanwhile, dropping those the history already held: the member gets
// every publication exactly once, in order. m must be pending. When the
// history cannot be read and fresh is set (a first join, undone by the
// caller), m stays pending and its buffer is dropped with it: the
// connection is not in the room, and a live message handed to it without
// the history before it would move its resume point past a gap.
func (h *Hub) catchUp(ctx context.Context, c *Client, r *room, m *member, after string,
	first func(history [][]byte, recovered bool) []byte, fresh bool) *frameError {
	req := transport.HistoryRequest{Limit: h.page}
	var since *transport.StreamPosition
	if after != "" {
		if off, epoch, ok := parseID(after); ok {
			since = &transport.StreamPosition{Offset: off, Epoch: epoch}
			req = transport.HistoryRequest{Since: since, Limit: h.resumeChunk()}
		}
	}
	var res transport.HistoryResult
	read := func() error {
		return h.patiently(ctx, c, unavailableWait, func(ctx context.Context) (err error) {
			res, err = h.broker.History(ctx, r.channel, req)
			return err
		})
	}
	err := read()
	if err == nil && since != nil && !res.Recovered && r.kind == roomKindInbox && res.Latest.Epoch != since.Epoch {
		// Perhaps the id of a DM this user sent (below): look for it in
		// every retained publication.
		req.Limit = 0
		err = read()
	}
	if err != nil {
		if !fresh {
			r.mu.Lock()
			r.goLiveLocked(c, m, 0, "")
			r.mu.Unlock()
		}
		return h.brokerErr("history", err)
	}
	if fresh && r.kind == roomKindRoom && res.Latest.Offset == 0 && !h.allowCreate(c.user, r.name) {
		return errf(CodeTooManyRooms, "too many new rooms, retry later or join one that exists")
	}
	pubs := res.Publications
	recovered := since != nil && res.Recovered
	// A resume reads the history a chunk at a time: more may follow.
	more := recovered && req.Limit > 0 && len(pubs) == req.Limit
	if since != nil && !recovered && r.kind == roomKindInbox && res.Latest.Epoch != since.Epoch {
		// Not a position in this inbox: the id of a DM this user sent,
		// which is the recipient's copy's position. Not recovered, the
		// history holds every retained publication (Limit 0), so the
		// copy that carries the id is found there.
		if i := indexDM(pubs, after); i >= 0 {
			since = &transport.StreamPosition{Offset: pubs[i].Offset, Epoch: pubs[i].Epoch}
			pubs, recovered = pubs[i+1:], true
		}
	}
	if !recovered && len(pubs) > h.page {
		pubs = pubs[len(pubs)-h.page:]
	}
	var cut uint64
	var cutEpoch string
	if n := len(pubs); n > 0 {
		cut, cutEpoch = pubs[n-1].Offset, pubs[n-1].Epoch
	} else if recovered {
		cut, cutEpoch = since.Offset, since.Epoch
	}
	hist, later := historyFrames(r.kind, r.name, pubs, after != "")
	var rest [][]byte
	if recovered {
		hist, rest = fitOldest(hist, h.joinedBytes())
	} else {
		hist = fitNewest(hist, h.joinedBytes())
	}
	c.limiter.charge(float64(framesBytes(hist)+framesBytes(rest)) / HistoryBytesPerToken)
	frames := make([][]byte, 0, 1+len(rest)+len(later))
	frames = append(append(append(frames, first(hist, recovered)), rest...), later...)
	if more || framesBytes(frames)+frameOverhead*len(frames) > h.resumeBytes() {
		// More than the outbound queue takes at once (a resume after a
		// long absence): the frames go out page by page as the client
		// reads them, while m, still pending, buffers what comes live.
		return h.resumePaged(ctx, c, r, m, frames, cut, cutEpoch, more)
	}
	r.mu.Lock()
	r.goLiveLocked(c, m, cut, cutEpoch, frames...)
	r.mu.Unlock()
	return nil
}

// resumePaged sends frames page by page (sendPaged), then releases what
// m buffered meanwhile. While more is set the history after cut is read
// on, a chunk at a time, each once the pages before it are nearly out:
// a resume holds about one chunk in memory, however long the absence.
// When m's buffer overflowed (a busy room), what it dropped is read from
// the history after cut and paged out in turn, until the buffer held:
// the member still gets every publication once, in order. Only when that
// history is gone too is c cut off, to resume with recovered false.
func (h *Hub) resumePaged(ctx context.Context, c *Client, r *room, m *member, frames [][]byte, cut uint64, epoch string, more bool) *frameError {
	r.mu.Lock()
	m.paging = true
	r.mu.Unlock()
	for {
		frames = h.sendPaged(ctx, c, frames)
		if frames == nil {
			return nil // c is gone: its rooms go with it
		}
		if !more {
			r.mu.Lock()
			if !m.overflowed {
				m.paging = false
				r.goLiveLocked(c, m, cut, epoch, frames...)
				r.mu.Unlock()
				return nil
			}
			m.overflowed = false
			r.mu.Unlock()
		}
		req := transport.HistoryRequest{Since: &transport.StreamPosition{Offset: cut, Epoch: epoch}, Limit: h.resumeChunk()}
		var res transport.HistoryResult
		err := h.patiently(ctx, c, unavailableWait, func(ctx context.Context) (err error) {
			res, err = h.broker.History(ctx, r.channel, req)
			return err
		})
		switch {
		case err != nil:
			// The owner stayed out of reach: the client resumes on
			// another try, perhaps on another node.
			c.disconnect(CloseInternal, "unavailable")
			return nil
		case !res.Recovered:
			c.disconnect(CloseSlowConsumer, "slow_consumer")
			return nil
		}
		pubs := res.Publications
		more = len(pubs) == req.Limit
		if n := len(pubs); n > 0 {
			cut, epoch = pubs[n-1].Offset, pubs[n-1].Epoch
		}
		next, later := historyFrames(r.kind, r.name, pubs, true)
		c.limiter.charge(float64(framesBytes(next)) / HistoryBytesPerToken)
		frames = append(append(frames, next...), later...)
	}
}

// sendPaged queues frames, oldest first, half a queue at a time, each once
// c's reader has taken most of the one before, and returns the last page
// (nil when c disconnected or ctx ended first), which the caller queues
// with the frames buffered meanwhile. It runs on the goroutine that
// handles c's frames, never on the one that writes them out.
func (h *Hub) sendPaged(ctx context.Context, c *Client, frames [][]byte) [][]byte {
	tick := time.NewTicker(pageWait)
	defer tick.Stop()
	for {
		if room := h.resumeBytes() - c.Queued(); room >= h.resumeBytes()/2 {
			n, i := 0, 0
			for ; i < len(frames) && n+len(frames[i])+frameOverhead <= room; i++ {
				n += len(frames[i]) + frameOverhead
			}
			if i == len(frames) {
				return frames
			}
			for _, f := range frames[:max(i, 1)] {
				c.enqueue(f)
			}
			frames = frames[max(i, 1):]
		}
		if c.isClosed() {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		case <-h.ctx.Done():
			return nil
		}
	}
}

// pageWait is how often a paged resume looks whether its client has read
// the page before.
const pageWait = 10 * time.Millisecond

// HistoryBytesPerToken is how many bytes of history (joined.history and
// the messages that follow it) cost a connection one frame of its rate
// limit: a join that sends a full 64 KiB page costs 4 frames more, so
// repeated joins send at most 16 KiB per frame of the rate, while a
// client catching up after a reconnect is barely slowed.
const HistoryBytesPerToken = 16 << 10

// resumeBytes bounds what one resume queues at once, history and the
// messages after it: half the outbound queue, so that what the client's
// other rooms send meanwhile still fits. More would cut the connection
// off as a slow consumer, with what it was sent dropped, and its next
// resume would fare no better; more goes out page by page (sendPaged).
func (h *Hub) resumeBytes() int { return h.queueBytes / 2 }

// resumeChunk is how many publications a resume reads from the history
// at once: a page of joined.history at least.
func (h *Hub) resumeChunk() int { return max(h.page, resumeChunkPubs) }

// resumeChunkPubs is how many publications a resume reads from the history
// at a time; what follows is read once those are nearly out.
const resumeChunkPubs = 256

// joinedBytes bounds the history in one joined or dm_history frame:
// HistoryBytes, and a quarter of the outbound queue when that is less.
func (h *Hub) joinedBytes() int { return min(h.histBytes, h.queueBytes/4) }

func framesBytes(fs [][]byte) int {
	n := 0
	for _, f := range fs {
		n += len(f)
	}
	return n
}

// fitOldest splits fs, oldest first, into the first frames whose bytes
// fit in limit (at least one, so that a resume always moves on) and the
// rest.
func fitOldest(fs [][]byte, limit int) (fit, rest [][]byte) {
	n, i := 0, 0
	for ; i < len(fs); i++ {
		n += len(fs[i])
		if n > limit && i > 0 {
			break
		}
	}
	return fs[:i], fs[i:]
}

// fitNewest returns the newest frames of fs, oldest first, whose bytes
// fit in limit.
func fitNewest(fs [][]byte, limit int) [][]byte {
	n, i := 0, len(fs)
	for i > 0 && n+len(fs[i-1]) <= limit {
		i--
		n += len(fs[i])
	}
	return fs[i:]
}

// historyFrames encodes the stored publications of a channel of kind
// (the room or inbox called name) as the history a client gets for them:
// "message" frames for a room, "dm" frames for an inbox. The annotations
// among pubs apply to the messages before them (annotate.go): a deleted
// message is left out, and an annotation is no history of its own. When
// resumed is set, the client has messages from before pubs, and later
// holds the frames of the annotations of those ("deleted"), to be sent
// after the history.
func historyFrames(kind int, name string, pubs []transport.Publication, resumed bool) (hist, later [][]byte) {
	evs := make([]event, len(pubs))
	for i, p := range pubs {
		evs[i], _ = decodeEvent(p.Data)
	}
	notes := readAnnotations(evs)
	hist = make([][]byte, 0, len(pubs))
	for i, p := range pubs {
		ev := &evs[i]
		if isAnnotation(ev.Kind) {
			if resumed && notes.first(ev) && !within(ev.Target, pubs) {
				if f, ok := appendStored(nil, kind, name, ev, infoOf(p)); ok {
					later = append(later, f)
				}
			}
			continue
		}
		if ev.Kind == kindMessage && notes.deleted(p) {
			continue
		}
		if f, ok := appendStored(nil, kind, name, ev, infoOf(p)); ok {
			hist = append(hist, f)
		}
	}
	return hist, later
}

// appendStored appends the frame a client gets for ev, stored at pub on
// a channel of kind (the room or inbox called name). It reports false,
// with b unchanged, when ev is nothing a client of such a channel is
// shown.
func appendStored(b []byte, kind int, name string, ev *event, pub pubInfo) ([]byte, bool) {
	switch {
	case kind == roomKindRoom && ev.Kind == kindMessage:
		return appendMessage(b, name, pub, ev.User, ev.Text), true
	case kind == roomKindInbox && ev.Kind == kindDM:
		return appendDM(b, pub, ev.ID, ev.User, ev.To, ev.Text), true
	case kind == roomKindRoom && ev.Kind == kindDelete && ev.Target != "":
		return appendDeleted(b, name, ev.Target, ev.User), true
	}
	return b, false
}

// indexDM returns the index of the newest publication in pubs that is a
// DM carrying id (event.ID), or -1.
func indexDM(pubs []transport.Publication, id string) int {
	for i := len(pubs) - 1; i >= 0; i-- {
		if ev, ok := decodeEvent(pubs[i].Data); ok && ev.Kind == kindDM && ev.ID == id {
			return i
		}
	}
	return -1
}

// goLiveLocked queues frames, then the buffered frames not at or before
// cut, and makes the member live. Called with r.mu held.
func (r *room) goLiveLocked(c *Client, m *member, cut uint64, epoch string, frames ...[]byte) {
	for _, f := range frames {
		c.enqueue(f)
	}
	buf := m.buf
	m.buf, m.bufBytes, m.pending = nil, 0, false
	if cut != 0 {
		m.last, m.lastEpoch = cut, epoch
	}
	for _, b := range buf {
		r.put(nil, c, m, b.frame, b.offset, b.epoch)
	}
}

// announce publishes that user came online or went offline in r on this
// node. Called with r.ctl held, so that notices of one room keep their
// order.
func (h *Hub) announce(ctx context.Context, r *room, user string, online bool) {
	var err error
	if online {
		err = h.presence.AddPresence(ctx, r.channel, user)
	} else {
		err = h.presence.RemovePresence(ctx, r.channel, user)
	}
	if err != nil {
		h.log.Warn("updating presence", "channel", r.channel, "online", online, "err", err)
	}
	ev := event{Kind: kindPresence, User: user, Node: h.node, Online: online}
	if _, err := h.broker.Publish(ctx, r.channel, ev.marshal(), transport.PublishOptions{Ephemeral: true}); err != nil {
		h.log.Debug("publishing presence", "channel", r.channel, "err", err)
	}
}

func (h *Hub) leave(ctx context.Context, c *Client, name string) *frameError {
	j := c.rooms[name]
	if j == nil {
		return errf(CodeNotJoined, "not a member of this room")
	}
	delete(c.rooms, name)
	h.leaveRoom(ctx, c, j.r)
	c.enqueue(leftFrame(name))
	return nil
}

// leaveRoom removes c from r; the user's last local connection takes
// their presence with it. It runs to the end even when ctx is done (the
// client may have been disconnected mid-frame): presence left behind
// would show the user online for good.
func (h *Hub) leaveRoom(ctx context.Context, c *Client, r *room) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	r.ctl.Lock()
	r.mu.Lock()
	delete(r.members, c)
	r.local[c.user]--
	last := r.local[c.user] <= 0
	if last {
		delete(r.local, c.user)
		if r.setOnline(c.user, h.node, false) {
			r.broadcastLocked(h, presenceFrame(r.name, c.user, false), nil)
		}
	}
	r.mu.Unlock()
	if last {
		h.announce(ctx, r, c.user, false)
	}
	r.ctl.Unlock()
	h.release(ctx, r)
}

// publishKey is the idempotency key of a send or DM. One with a ref is
// keyed by it (idempotencyKey), so that the client's own retries are
// stored once. One without still gets a key unique to this connection
// and frame: the hub retries a publish that found the broker unavailable,
// and a first attempt whose answer was lost may have been stored.
func (c *Client) publishKey(ref, to, text string) string {
	if ref != "" {
		return idempotencyKey(c.user, ref, to, text)
	}
	c.publishSeq++
	return "c\x00" + c.id + "\x00" + strconv.FormatUint(c.publishSeq, 36)
}

// idempotencyKey scopes a ref to its user and to what was sent: a retry
// repeats both, so it is stored once, while a client that reuses a ref for
// different text (or another DM peer) still has every message kept.
func idempotencyKey(user, ref, to, text string) string {
	h := fnv.New64a()
	h.Write([]byte(to))
	h.Write([]byte{0})
	h.Write([]byte(text))
	return user + "\x00" + ref + "\x00" + strconv.FormatUint(h.Sum64(), 36)
}

func (h *Hub) send(ctx context.Context, c *Client, name, text, ref string) *frameError {
	j := c.rooms[name]
	if j == nil {
		return errf(CodeNotJoined, "join the room before sending to it")
	}
	pub, ev, ferr := h.publishMessage(ctx, c, name, text, ref)
	if ferr != nil {
		return ferr
	}
	h.stats.published.Add(1)
	if ref != "" {
		j.r.ack(j.m, c, pub, ev, ref)
	}
	return nil
}

// postMessage stores a room message, ev, on channel under the
// idempotency key. Every room message takes this path: a connection's
// send (c its client) and the server API's PublishAs (c nil).
func (h *Hub) postMessage(ctx context.Context, c *Client, channel string, ev event, key string) (transport.Publication, *frameError) {
	return h.publish(ctx, c, "publish", channel, ev.marshal(), transport.PublishOptions{IdempotencyKey: key})
}

// postDM stores the DM ev in the recipient's inbox, then in the
// sender's, under the idempotency key, and returns the sender's copy; ev
// gets the DM's id (dmID).
// Every DM takes this path: a connection's dm (c its client) and the
// server API's DMAs (c nil).
func (h *Hub) postDM(ctx context.Context, c *Client, ev *event, key string) (transport.Publication, *frameError) {
	if h.users != nil && !h.users.Exists(ev.To) {
		return transport.Publication{}, errf(CodeNoSuchUser, "no user is called "+ev.To)
	}
	opts := transport.PublishOptions{IdempotencyKey: key}
	// The recipient's copy first: when the sender's copy (the ack) then
	// fails, a retry with the same ref does not deliver the DM twice. Its
	// position is the DM's id, which the sender's copy carries: a retry
	// gets the original position back, so the id stays the same.
	if ev.To != ev.User {
		rpub, ferr := h.publish(ctx, c, "publish dm", inboxPrefix+ev.To, ev.marshal(), opts)
		if ferr != nil {
			return transport.Publication{}, ferr
		}
		ev.ID = formatID(rpub.Offset, rpub.Epoch)
	}
	return h.publish(ctx, c, "publish dm", inboxPrefix+ev.User, ev.marshal(), opts)
}

// dmID is the id of the DM whose sender's copy is pub: the position of
// the recipient's copy (ev.ID), or of the only copy of a DM to oneself.
func dmID(pub transport.Publication, ev event) string {
	if ev.ID != "" {
		return ev.ID
	}
	return formatID(pub.Offset, pub.Epoch)
}

// publish publishes data on channel for c (nil for a request of the
// server API), retrying while the broker is unavailable (patiently), and
// turns a failure into the error frame for what.
func (h *Hub) publish(ctx context.Context, c *Client, what, channel string, data []byte, opts transport.PublishOptions) (transport.Publication, *frameError) {
	var pub transport.Publication
	err := h.patiently(ctx, c, unavailableWait, func(ctx context.Context) (err error) {
		if h.publishSeconds == nil {
			pub, err = h.broker.Publish(ctx, channel, data, opts)
			return err
		}
		t0 := time.Now()
		pub, err = h.broker.Publish(ctx, channel, data, opts)
		h.publishSeconds.Observe(time.Since(t0).Seconds())
		return err
	})
	if err != nil {
		return pub, h.brokerErr(what, err)
	}
	return pub, nil
}

// ack makes sure the connection that published pub with ref gets exactly
// one copy of it carrying the ref. Usually the live delivery does that.
// But a Publish with an IdempotencyKey that was used before returns the
// original publication, which is not delivered again and whose delivery
// (if any) carried another connection's ref: then the ack is sent here,
// or, when the original has not reached this member yet, attached to it
// on arrival.
//
// A member that has no position in the stream yet (an inbox that neither
// fetched its history nor received anything since this node subscribed)
// cannot tell a publication still on its way from one that came before
// it and never will: a retry from a new connection on another node is
// the second kind. It gets its ack at once, and fanOut drops the live
// copy if one follows.
func (r *room) ack(m *member, c *Client, pub transport.Publication, ev event, ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case m.acked == pub.Offset && m.ackedEpoch == pub.Epoch:
		// Delivered with our ref already.
	case m.last >= pub.Offset && m.lastEpoch == pub.Epoch,
		r.kind == roomKindInbox && m.lastEpoch == "":
		// Seen without our ref (a retry of an older publication), or
		// possibly never coming.
		if f, ok := ackFrame(r.name, pub, ev, ref); ok {
			c.enqueue(f)
		}
		m.acked, m.ackedEpoch = pub.Offset, pub.Epoch
	default:
		m.want, m.wantEpoch, m.wantRef = pub.Offset, pub.Epoch, ref
	}
}

func (h *Hub) dm(ctx context.Context, c *Client, to, text, ref string) *frameError {
	pub, ev, ferr := h.publishDM(ctx, c, to, text, ref)
	if ferr != nil {
		return ferr
	}
	h.stats.dms.Add(1)
	if ref != "" {
		c.inbox.ack(c.inboxMember, c, pub, ev, ref)
	}
	return nil
}

// publishDM stores a DM from c's user in both inboxes (postDM): the path
// of a dm frame and of a one-shot DM. It returns the sender's copy, the
// one c's user sees, and the event, which carries the DM's id.
func (h *Hub) publishDM(ctx context.Context, c *Client, to, text, ref string) (transport.Publication, event, *frameError) {
	ev := event{Kind: kindDM, User: c.user, To: to, Text: text, Conn: c.id, Ref: ref}
	pub, ferr := h.postDM(ctx, c, &ev, c.publishKey(ref, to, text))
	return pub, ev, ferr
}

// publishMessage stores text in room as c's user (postMessage): the path
// of a send frame and of a one-shot Send.
func (h *Hub) publishMessage(ctx context.Context, c *Client, room, text, ref string) (transport.Publication, event, *frameError) {
	ev := event{Kind: kindMessage, User: c.user, Text: text, Conn: c.id, Ref: ref}
	pub, ferr := h.postMessage(ctx, c, roomPrefix+room, ev, c.publishKey(ref, "", text))
	return pub, ev, ferr
}

// ackFrame is the frame that acknowledges pub, published as ev (in room,
// for a message) with ref, to its sender. pub may be an earlier
// publication that a retry with the same ref returned: the frame shows
// what was stored. False when that is nothing a client is shown.
func ackFrame(room string, pub transport.Publication, ev event, ref string) ([]byte, bool) {
	orig, ok := decodeEvent(pub.Data)
	if !ok || orig.Kind != ev.Kind {
		orig = ev
	}
	kind := roomKindRoom
	if ev.Kind == kindDM {
		kind = roomKindInbox
	}
	f, ok := appendStored(nil, kind, room, &orig, infoOf(pub))
	if !ok || ref == "" {
		return f, ok
	}
	return withRef(f, ref), true
}

func (h *Hub) typing(ctx context.Context, c *Client, name string) *frameError {
	j := c.rooms[name]
	if j == nil {
		return errf(CodeNotJoined, "join the room before typing in it")
	}
	now := h.now()
	if !j.typingAt.IsZero() && now.Sub(j.typingAt) < typingInterval {
		return nil
	}
	j.typingAt = now
	h.publishTyping(ctx, c, name)
	return nil
}

// publishTyping tells room that c's user is typing. Typing notices are
// best effort: a failure is not the client's.
func (h *Hub) publishTyping(ctx context.Context, c *Client, room string) {
	ev := event{Kind: kindTyping, User: c.user, Conn: c.id}
	if _, err := h.broker.Publish(ctx, roomPrefix+room, ev.marshal(), transport.PublishOptions{Ephemeral: true}); err != nil {
		h.log.Debug("publishing typing", "err", err)
	}
}

// dmHistory answers a "dms" frame with the inbox's history after the id
// (or the latest page) in a "dm_history" frame.
func (h *Hub) dmHistory(ctx context.Context, c *Client, after string) *frameError {
	r, m := c.inbox, c.inboxMember
	r.mu.Lock()
	m.pending = true
	r.mu.Unlock()
	return h.catchUp(ctx, c, r, m, after, dmHistoryFrame, false)
}
