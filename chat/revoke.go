package chat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Defaults for the revocation settings of Config.
const (
	DefaultRevocationSnapshotEvery    = 100
	DefaultRevocationSnapshotInterval = 5 * time.Minute
	// DefaultMaxRevocations bounds the revocations one node remembers:
	// at about 100 bytes each, some 20 MB, and a full snapshot of them is
	// 100 publications of snapshotPartSize, well within a channel's
	// default retention of 1000.
	DefaultMaxRevocations = 200_000
	// snapshotPartSize is how many revocations one snapshot publication
	// carries (about 100 KB of JSON).
	snapshotPartSize = 2000
	// pruneEvery is the longest time between two sweeps of expired
	// revocations.
	pruneEvery = time.Minute
	// revocationTimeout bounds one broker call of the revocation code.
	revocationTimeout = 10 * time.Second
)

// revocations is the hub's record of logged-out sessions.
//
// The record lives on channel s:revoked, which the broker retains only in
// part (the last N publications, and maybe only for --history-age). So
// that a logout outlives that retention, the channel is compacted:
// snapshots listing every unexpired revocation are published after every
// `every` revocations (by the node whose revocation was the every-th in
// the channel's order, which every node agrees on) and at least every
// `interval` while there is something a snapshot would add or keep
// alive. A node loading the record applies everything retained: the
// latest snapshot and whatever came after it are always in there.
type revocations struct {
	every    int
	interval time.Duration
	jitter   time.Duration // per node, so that timers do not all fire at once
	maxAge   time.Duration
	max      int

	loaded atomic.Bool
	kick   chan struct{} // buffer 1: the snapshot loop has work
	snapMu sync.Mutex    // one snapshot at a time on this node

	mu       sync.Mutex // guards what follows; a leaf lock
	m        map[string]int64
	pending  []transport.Publication // delivered while loading
	epoch    string                  // stream position last applied
	offset   uint64
	since    int       // revocations since the last snapshot, in channel order
	lastSnap time.Time // when a snapshot was last seen or published
	// snapEpoch and snapOffset locate the latest snapshot seen or
	// published. A logout compares its own offset with them: deliveries
	// (and so since) may lag behind a burst of logouts, offsets do not.
	snapEpoch  string
	snapOffset uint64
	dropped    uint64
	dropLog    time.Time // last warning about dropped revocations
}

func (rv *revocations) init(cfg Config) {
	rv.every = orDefault(cfg.RevocationSnapshotEvery, DefaultRevocationSnapshotEvery)
	rv.interval = cfg.RevocationSnapshotInterval
	if rv.interval == 0 {
		rv.interval = DefaultRevocationSnapshotInterval
	}
	rv.maxAge = cfg.HistoryMaxAge
	if rv.maxAge > 0 && rv.interval > rv.maxAge/2 {
		rv.interval = max(rv.maxAge/2, time.Millisecond)
	}
	rv.jitter = time.Duration(rand.Int64N(int64(rv.interval/4) + 1))
	rv.max = orDefault(cfg.MaxRevocations, DefaultMaxRevocations)
	rv.kick = make(chan struct{}, 1)
	rv.m = make(map[string]int64)
}

// RevocationsLoaded reports whether the hub has loaded the cluster's
// session revocations. Until it has, SessionRevoked cannot be trusted:
// package web refuses sessions meanwhile, and readiness should wait
// for it.
func (h *Hub) RevocationsLoaded() bool { return h.rev.loaded.Load() }

// RevocationStats returns how many revocations the node remembers and
// how many it had to forget early because of Config.MaxRevocations.
func (h *Hub) RevocationStats() (live int, dropped uint64) {
	h.rev.mu.Lock()
	defer h.rev.mu.Unlock()
	return len(h.rev.m), h.rev.dropped
}

// RevokeSession records, cluster-wide, that session id must no longer be
// accepted; until is when the session would have expired anyway. Open
// connections of that session are closed with CloseLoggedOut.
func (h *Hub) RevokeSession(ctx context.Context, id string, until time.Time) error {
	if id == "" {
		return ErrEmptySession
	}
	ev := event{Kind: kindRevoke, Session: id, Until: until.UnixMilli(), Node: h.node}
	pub, err := h.broker.Publish(ctx, revokedChannel, ev.marshal(), transport.PublishOptions{})
	if err != nil {
		return fmt.Errorf("chat: revoke session: %w", err)
	}
	if h.rev.insert(h, id, ev.Until) {
		h.disconnectSession(id)
	}
	// The snapshot loop normally keeps up; when it does not (its node
	// died, or revocations come faster than it publishes) the logouts
	// themselves compact, so that the channel's retention is never
	// outrun.
	if h.rev.loaded.Load() && h.rev.overdue(pub) {
		if err := h.publishSnapshotIfOverdue(ctx, pub); err != nil {
			h.log.Warn("publishing revocation snapshot", "err", err)
		}
	}
	return nil
}

// overdue reports whether more than 2*every publications separate pub
// from the latest snapshot known here, so that pub's author must compact
// before retention could drop that snapshot.
func (rv *revocations) overdue(pub transport.Publication) bool {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.overdueLocked(pub)
}

func (rv *revocations) overdueLocked(pub transport.Publication) bool {
	limit := uint64(2 * rv.every)
	if pub.Epoch != rv.snapEpoch {
		return pub.Offset >= limit
	}
	return pub.Offset >= rv.snapOffset+limit
}

// noteSnapshot records where a snapshot (its first part) landed.
func (rv *revocations) noteSnapshotLocked(pub transport.Publication) {
	if pub.Offset == 0 {
		return
	}
	if pub.Epoch != rv.snapEpoch || pub.Offset > rv.snapOffset {
		rv.snapEpoch, rv.snapOffset = pub.Epoch, pub.Offset
	}
}

// publishSnapshotIfOverdue publishes a snapshot unless one landed after
// pub's overdue point meanwhile (concurrent logouts all find it overdue;
// one snapshot serves them all).
func (h *Hub) publishSnapshotIfOverdue(ctx context.Context, pub transport.Publication) error {
	return h.publishSnapshot(ctx, 0, &pub)
}

// SessionRevoked reports whether session id was revoked on any node.
func (h *Hub) SessionRevoked(id string) bool {
	h.rev.mu.Lock()
	until, ok := h.rev.m[id]
	h.rev.mu.Unlock()
	return ok && until > h.now().UnixMilli()
}

// insert records one revocation and reports whether it is news.
func (rv *revocations) insert(h *Hub, id string, until int64) bool {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.insertLocked(h, id, until, h.now())
}

func (rv *revocations) insertLocked(h *Hub, id string, until int64, now time.Time) bool {
	if until <= now.UnixMilli() {
		return false
	}
	old, ok := rv.m[id]
	if ok && old >= until {
		return false
	}
	if !ok && len(rv.m) >= rv.max {
		rv.makeRoomLocked(h, now)
	}
	rv.m[id] = until
	return !ok
}

// makeRoomLocked frees one place in a full map: expired entries go first;
// failing that, the one closest to its expiry is forgotten, and counted.
func (rv *revocations) makeRoomLocked(h *Hub, now time.Time) {
	if rv.pruneLocked(now) > 0 {
		return
	}
	var victim string
	var soonest int64
	for k, v := range rv.m {
		if victim == "" || v < soonest {
			victim, soonest = k, v
		}
	}
	delete(rv.m, victim)
	rv.dropped++
	if now.Sub(rv.dropLog) >= time.Minute {
		rv.dropLog = now
		h.log.Warn("revocation table full: forgetting the revocations closest to expiry",
			"max", rv.max, "dropped_total", rv.dropped)
	}
}

func (rv *revocations) pruneLocked(now time.Time) int {
	ms := now.UnixMilli()
	n := 0
	for k, v := range rv.m {
		if v <= ms {
			delete(rv.m, k)
			n++
		}
	}
	return n
}

// disconnectSession closes the open connections of a revoked session.
func (h *Hub) disconnectSession(id string) {
	h.clientsMu.Lock()
	hit := slices.Clone(h.bySession[id])
	h.clientsMu.Unlock()
	for _, c := range hit {
		c.disconnect(CloseLoggedOut, "logged_out")
	}
}

// handleRevocationPub takes a publication on s:revoked from the broker.
func (h *Hub) handleRevocationPub(pub transport.Publication) {
	rv := &h.rev
	rv.mu.Lock()
	if !rv.loaded.Load() {
		// Applied after the retained history, in order.
		rv.pending = append(rv.pending, pub)
		rv.mu.Unlock()
		return
	}
	fresh, snapshot := rv.applyLocked(h, pub, h.now())
	rv.mu.Unlock()
	for _, id := range fresh {
		h.disconnectSession(id)
	}
	if snapshot {
		select {
		case rv.kick <- struct{}{}:
		default:
		}
	}
}

// applyLocked applies one publication and returns the sessions it newly
// revoked, and whether this node is the one to publish the next snapshot.
func (rv *revocations) applyLocked(h *Hub, pub transport.Publication, now time.Time) (fresh []string, snapshot bool) {
	if pub.Offset != 0 {
		if pub.Epoch == rv.epoch && pub.Offset <= rv.offset {
			return nil, false // already applied (history and live overlap)
		}
		rv.epoch, rv.offset = pub.Epoch, pub.Offset
	}
	ev, ok := decodeEvent(pub.Data)
	if !ok {
		return nil, false
	}
	switch ev.Kind {
	case kindRevoke:
		if ev.Session == "" {
			return nil, false
		}
		if rv.insertLocked(h, ev.Session, ev.Until, now) {
			fresh = append(fresh, ev.Session)
		}
		rv.since++
		// Every node sees the channel in one order, so exactly one of
		// them, the author of the every-th revocation, takes the
		// snapshot; if it is gone, the author of the next every-th does.
		return fresh, rv.since%rv.every == 0 && ev.Node == h.node
	case kindRevokeSnapshot:
		for id, until := range ev.Revoked {
			if rv.insertLocked(h, id, until, now) {
				fresh = append(fresh, id)
			}
		}
		if ev.Part == 0 {
			rv.since = 0
			rv.lastSnap = now
			rv.noteSnapshotLocked(pub)
		}
	}
	return fresh, false
}

// loadRevocations subscribes to the revocation channel and loads what it
// retains, retrying until it succeeds or the hub shuts down.
func (h *Hub) loadRevocations() {
	backoff := 100 * time.Millisecond
	for {
		err := h.loadRevocationsOnce()
		if err == nil {
			return
		}
		h.log.Warn("loading session revocations", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (h *Hub) loadRevocationsOnce() error {
	ctx, cancel := context.WithTimeout(h.ctx, revocationTimeout)
	defer cancel()
	if err := h.broker.Subscribe(ctx, revokedChannel); err != nil {
		return err
	}
	res, err := h.broker.History(ctx, revokedChannel, transport.HistoryRequest{})
	if err != nil {
		return err
	}
	rv := &h.rev
	now := h.now()
	rv.mu.Lock()
	rv.lastSnap = now
	var fresh []string
	for _, p := range append(res.Publications, rv.pending...) {
		f, _ := rv.applyLocked(h, p, now)
		fresh = append(fresh, f...)
	}
	rv.pending = nil
	rv.loaded.Store(true)
	n := len(rv.m)
	rv.mu.Unlock()
	for _, id := range fresh {
		h.disconnectSession(id)
	}
	h.log.Debug("session revocations loaded", "live", n, "retained", len(res.Publications))
	return nil
}

// revocationLoop prunes expired revocations and publishes snapshots when
// this node's turn comes (kick) or the interval has passed.
func (h *Hub) revocationLoop() {
	rv := &h.rev
	tick := time.NewTicker(max(min(rv.interval/4, pruneEvery), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-rv.kick:
		case <-tick.C:
			now := h.now()
			rv.mu.Lock()
			rv.pruneLocked(now)
			due := rv.snapshotDueLocked(now)
			rv.mu.Unlock()
			if !due {
				continue
			}
		}
		if !rv.loaded.Load() {
			continue
		}
		if err := h.publishSnapshot(h.ctx, 0, nil); err != nil && h.ctx.Err() == nil {
			h.log.Warn("publishing revocation snapshot", "err", err)
		}
	}
}

// snapshotDueLocked: the interval (plus this node's jitter) has passed
// since the last snapshot, and a snapshot would cover revocations that
// came after it, or keep live ones from aging out of the broker.
func (rv *revocations) snapshotDueLocked(now time.Time) bool {
	if !rv.loaded.Load() || now.Sub(rv.lastSnap) < rv.interval+rv.jitter {
		return false
	}
	return rv.since > 0 || (rv.maxAge > 0 && len(rv.m) > 0)
}

// publishSnapshot publishes every unexpired revocation this node knows,
// in parts of snapshotPartSize, unless fewer than minSince revocations
// came since the last snapshot (someone else just took one).
func (h *Hub) publishSnapshot(ctx context.Context, minSince int, trigger *transport.Publication) error {
	rv := &h.rev
	rv.snapMu.Lock()
	defer rv.snapMu.Unlock()
	now := h.now()
	ms := now.UnixMilli()
	rv.mu.Lock()
	if rv.since < minSince || (trigger != nil && !rv.overdueLocked(*trigger)) {
		rv.mu.Unlock()
		return nil
	}
	var parts []map[string]int64
	cur := make(map[string]int64, min(len(rv.m), snapshotPartSize))
	for id, until := range rv.m {
		if until <= ms {
			continue
		}
		if len(cur) == snapshotPartSize {
			parts = append(parts, cur)
			cur = make(map[string]int64, snapshotPartSize)
		}
		cur[id] = until
	}
	parts = append(parts, cur) // an empty snapshot still resets the count
	rv.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, revocationTimeout)
	defer cancel()
	var first transport.Publication
	for i, p := range parts {
		ev := event{Kind: kindRevokeSnapshot, Node: h.node, Revoked: p, Part: i, Parts: len(parts)}
		pub, err := h.broker.Publish(ctx, revokedChannel, ev.marshal(), transport.PublishOptions{})
		if err != nil {
			return fmt.Errorf("chat: revocation snapshot: %w", err)
		}
		if i == 0 {
			first = pub
		}
	}
	rv.mu.Lock()
	rv.noteSnapshotLocked(first)
	// Our part 0 resets the count again when it comes back; until then
	// this keeps the next logout from snapshotting once more.
	rv.since = 0
	rv.lastSnap = now
	rv.mu.Unlock()
	return nil
}
