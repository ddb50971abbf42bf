package mesh

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// A channel's state on the node that orders it or keeps its replica: the
// confirmed stream (epoch, offsets, retained history, idempotency keys),
// the owner's unconfirmed publications, the subscribed nodes and the
// presence table, and how that state is read, copied and replaced.

// chanState is a channel's stream as kept by its owner, or as a replica
// kept by its backup (owned == false). It is guarded by lk, a mutex that
// can be acquired with a deadline: a node taking over holds it while it
// asks its peers for their copies. The copy to the backup runs without it
// (pipeline.go).
type chanState struct {
	lk   chan struct{}
	name string

	owned bool // this node currently orders the channel
	has   bool // epoch is set: the stream exists here (owned or replica)

	// handedTo is the node this one last handed the channel over to (it
	// answered that node's takeover). A later takeover here asks it for
	// its copy even when this node's view does not list it: it may be a
	// node that joined and that this node has not heard of from gossip
	// yet, and it may have ordered the channel since.
	handedTo transport.Peer

	// epoch, offset, lastTime, hist and dedupe are the confirmed stream:
	// what is readable, fanned out and acknowledged (pipeline.go).
	epoch    string
	offset   uint64
	lastTime int64
	hist     ring
	// counted is hist.bytes as last added to the broker's total
	// (budget.go); used orders channels for eviction, least recently
	// used first; cold is set when hist was evicted while Config.Log
	// keeps the history: the log is read (warm) before hist is.
	counted int64
	used    atomic.Uint64
	cold    bool

	// The owner's unconfirmed publications (pipeline.go). next is the last
	// offset assigned (offset when none is pending); pend are the assigned
	// publications in offset order, of which the first sent are the
	// flusher's batch in flight; pendKeys indexes their idempotency keys.
	next     uint64
	pend     []*pendingPub
	sent     int
	pendKeys map[string]*pendingPub
	flushing bool   // a flusher goroutine runs for the channel
	gen      uint64 // bumped whenever pend is abandoned
	needSnap bool   // the backup may hold other data past offset: resend all
	// logDone, when set, is closed once the flusher's log writes are done
	// (waitLog).
	logDone chan struct{}

	dedupe      map[string]dedupeEntry
	dedupeOrder []dedupeEntry // by at, for expiry

	interest map[string]struct{}            // nodes subscribed
	presence map[string]map[string]struct{} // user -> nodes
}

type dedupeEntry struct {
	key string
	at  int64 // Unix ms when first seen
	pub transport.Publication
}

func newChanState(name string, histSize int) *chanState {
	return &chanState{
		lk:       make(chan struct{}, 1),
		name:     name,
		hist:     ring{size: histSize},
		dedupe:   make(map[string]dedupeEntry),
		pendKeys: make(map[string]*pendingPub),
		interest: make(map[string]struct{}),
		presence: make(map[string]map[string]struct{}),
	}
}

func (s *chanState) lock(ctx context.Context) error {
	select {
	case s.lk <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mesh: channel %s busy: %w", s.name, ctx.Err())
	}
}

func (s *chanState) unlock() { <-s.lk }

// ring is a channel's retained history, oldest first. It grows as
// publications arrive, up to size, and only then wraps: most channels
// (every user's DM inbox, quiet rooms) retain a handful of publications,
// and preallocating size slots for each of them on the owner and again on
// the backup cost tens of KiB per user.
type ring struct {
	buf   []transport.Publication
	size  int   // retention; buf never grows beyond it
	start int   // index of the oldest once buf is full
	bytes int64 // what buf retains, pubBytes each
}

// pubOverhead is what a retained publication costs besides its data:
// the Publication in the ring, its epoch's string header.
const pubOverhead = 64

func pubBytes(p transport.Publication) int64 { return int64(len(p.Data)) + pubOverhead }

func (r *ring) push(p transport.Publication) {
	if r.size <= 0 {
		return
	}
	r.bytes += pubBytes(p)
	if len(r.buf) < r.size {
		// Not full yet, so start is 0 and buf is in order.
		if len(r.buf) == cap(r.buf) {
			grown := make([]transport.Publication, len(r.buf), min(r.size, max(8, 2*cap(r.buf))))
			copy(grown, r.buf)
			r.buf = grown
		}
		r.buf = append(r.buf, p)
		return
	}
	r.bytes -= pubBytes(r.buf[r.start])
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) len() int { return len(r.buf) }

func (r *ring) at(i int) transport.Publication { return r.buf[(r.start+i)%len(r.buf)] }

// reset empties the ring and gives its memory back.
func (r *ring) reset() {
	r.buf, r.start, r.bytes = nil, 0, 0
}

// find returns the retained publication at offset.
func (r *ring) find(offset uint64) (transport.Publication, bool) {
	n := r.len()
	if n == 0 {
		return transport.Publication{}, false
	}
	newest := r.at(n - 1).Offset
	if offset > newest || newest-offset >= uint64(n) {
		return transport.Publication{}, false
	}
	p := r.at(n - 1 - int(newest-offset))
	return p, p.Offset == offset
}

// kept is how many of the newest publications are not older than
// minTime (HistoryMaxAge; 0 keeps all): times only grow along a channel.
func (r *ring) kept(minTime int64) int {
	n := r.len()
	for n > 0 && r.at(r.len()-n).Time < minTime {
		n--
	}
	return n
}

// slice copies n publications out, the first at index i (0 is the
// oldest).
func (r *ring) slice(i, n int) []transport.Publication {
	out := make([]transport.Publication, n)
	for k := range out {
		out[k] = r.at(i + k)
	}
	return out
}

func (b *Broker) minTime() int64 {
	if b.cfg.HistoryMaxAge <= 0 {
		return 0
	}
	return time.Now().Add(-b.cfg.HistoryMaxAge).UnixMilli()
}

// history answers a HistoryRequest from s; s must be locked. It copies
// out only what it answers: a resume reading a long history a chunk at a
// time costs each chunk, not the whole history each time.
func (b *Broker) history(s *chanState, req transport.HistoryRequest) transport.HistoryResult {
	res := transport.HistoryResult{Latest: transport.StreamPosition{Offset: s.offset, Epoch: s.epoch}}
	h := b.warmed(s)
	kept := h.kept(b.minTime())
	first, n := h.len()-kept, kept // the retained ones, oldest first
	if req.Since != nil && req.Since.Epoch == s.epoch && req.Since.Epoch != "" && req.Since.Offset <= s.offset &&
		req.Since.Offset >= s.offset-uint64(kept) {
		res.Recovered = true
		n = int(s.offset - req.Since.Offset)
		first = h.len() - n
		if req.Limit > 0 {
			n = min(n, req.Limit)
		}
		res.Publications = h.slice(first, n)
		return res
	}
	if req.Limit > 0 && n > req.Limit {
		first, n = h.len()-req.Limit, req.Limit
	}
	res.Publications = h.slice(first, n)
	return res
}

// snapshotOf copies s for the wire; s must be locked.
func (b *Broker) snapshotOf(s *chanState) *snapshot {
	snap := &snapshot{
		Epoch:    s.epoch,
		Offset:   s.offset,
		LastTime: s.lastTime,
		Pubs:     b.retained(s, 0),
		Dedupe:   slices.Clone(s.dedupeOrder),
		Interest: slices.Collect(maps.Keys(s.interest)),
		Presence: make(map[string][]string, len(s.presence)),
	}
	for u, ns := range s.presence {
		snap.Presence[u] = slices.Collect(maps.Keys(ns))
	}
	return snap
}

// applySnapshot replaces s's stream with snap. Interest and presence are
// merged, not replaced: they are refreshed by re-registration anyway, and
// a union never forgets a subscriber.
func (b *Broker) applySnapshot(s *chanState, snap *snapshot) {
	s.epoch, s.offset, s.lastTime = snap.Epoch, snap.Offset, snap.LastTime
	s.next = s.offset
	s.has = true
	s.hist.reset()
	for _, p := range snap.Pubs {
		s.hist.push(p)
	}
	s.cold = false
	b.account(s)
	clear(s.dedupe)
	s.dedupeOrder = s.dedupeOrder[:0]
	for _, d := range snap.Dedupe {
		// The publication a key answers with is nearly always still in
		// the history: share it, rather than hold a second copy of
		// every message of the dedupe window (decoded or loaded apart).
		if p, ok := s.hist.find(d.pub.Offset); ok && p.Epoch == d.pub.Epoch {
			d.pub = p
		}
		s.dedupe[d.key] = d
		s.dedupeOrder = append(s.dedupeOrder, d)
	}
	b.mergeMembers(s, snap)
}

func (b *Broker) mergeMembers(s *chanState, snap *snapshot) {
	for _, n := range snap.Interest {
		s.interest[n] = struct{}{}
	}
	for u, ns := range snap.Presence {
		for _, n := range ns {
			addPresence(s, u, n)
		}
	}
}

func addPresence(s *chanState, user, node string) {
	set := s.presence[user]
	if set == nil {
		set = make(map[string]struct{})
		s.presence[user] = set
	}
	set[node] = struct{}{}
}

// removePresence undoes addPresence, forgetting user once no node has it.
func removePresence(s *chanState, user, node string) {
	set := s.presence[user]
	delete(set, node)
	if len(set) == 0 {
		delete(s.presence, user)
	}
}

// expireDedupe forgets the idempotency keys older than DedupeWindow; s is
// locked.
func (b *Broker) expireDedupe(s *chanState, now int64) {
	cutoff := now - b.cfg.DedupeWindow.Milliseconds()
	i := 0
	for i < len(s.dedupeOrder) && s.dedupeOrder[i].at < cutoff {
		if d, ok := s.dedupe[s.dedupeOrder[i].key]; ok && d.at == s.dedupeOrder[i].at {
			delete(s.dedupe, d.key)
		}
		i++
	}
	if i > 0 {
		s.dedupeOrder = append(s.dedupeOrder[:0], s.dedupeOrder[i:]...)
	}
}

// chanFor returns the channel's state, creating it empty.
func (b *Broker) chanFor(ch string) *chanState {
	b.chMu.RLock()
	s := b.chans[ch]
	b.chMu.RUnlock()
	if s != nil {
		return s
	}
	b.chMu.Lock()
	defer b.chMu.Unlock()
	if s = b.chans[ch]; s == nil {
		s = newChanState(ch, b.cfg.HistorySize)
		b.chans[ch] = s
	}
	return s
}
