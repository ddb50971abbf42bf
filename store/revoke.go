package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Defaults for RevocationConfig.
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

// RevokedChannel is the broker channel the revocations live on. The chat
// hub is the broker's handler and hands its deliveries on "s:" channels
// to Revocations.HandlePublication.
const RevokedChannel = "s:revoked"

// Kinds of revocationEvent.
const (
	kindRevoke = "s"
	// kindRevokeSnapshot is one part of a compaction of RevokedChannel:
	// every revocation still unexpired when it was taken.
	kindRevokeSnapshot = "S"
)

// revocationEvent is a publication on RevokedChannel. The short keys are
// the stored format: every node, and every retained publication, uses
// them.
type revocationEvent struct {
	Kind    string `json:"k"`
	Node    string `json:"n,omitempty"` // node that published it
	Session string `json:"s,omitempty"` // revocation: session id
	Until   int64  `json:"e,omitempty"` // revocation: Unix ms it matters until
	// Revoked is a snapshot part: session id -> Unix ms it matters until.
	Revoked map[string]int64 `json:"l,omitempty"`
	Part    int              `json:"i,omitempty"`  // snapshot part, from 0
	Parts   int              `json:"pn,omitempty"` // snapshot parts in all
}

func (e *revocationEvent) marshal() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Only strings and integers: Marshal cannot fail.
		panic("store: marshal revocation: " + err.Error())
	}
	return b
}

func decodeRevocation(data []byte) (revocationEvent, bool) {
	var e revocationEvent
	if err := json.Unmarshal(data, &e); err != nil || e.Kind == "" {
		return revocationEvent{}, false
	}
	return e, true
}

// RevocationConfig configures Revocations. Zero values mean the
// documented defaults.
type RevocationConfig struct {
	// Node is this node's name, unique in the cluster. Required.
	Node string
	// Broker carries the revocations between nodes and retains them.
	// Required. It is started by its handler (the chat hub), before
	// Revocations.Start.
	Broker transport.Broker
	// HistoryMaxAge is the broker's age limit on retained publications
	// (--history-age), 0 for none. Snapshots are republished at least
	// every HistoryMaxAge/2 so that a logout outlives it.
	HistoryMaxAge time.Duration
	// SnapshotEvery is K: after K revocations since the last snapshot,
	// the node that published the K-th publishes a snapshot of every
	// unexpired revocation. It must stay well under the broker's
	// per-channel retention (1000 by default). Default 100.
	SnapshotEvery int
	// SnapshotInterval is the longest time between snapshots while there
	// are revocations since the last one (or, with HistoryMaxAge, any
	// unexpired ones). Default 5 minutes, and never more than
	// HistoryMaxAge/2.
	SnapshotInterval time.Duration
	// MaxRevocations caps the revocations a node remembers. Beyond it the
	// one closest to expiry is forgotten and counted (Stats). Default
	// DefaultMaxRevocations.
	MaxRevocations int
	// Logger receives the logs. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Revocations is the cluster's record of logged-out sessions, as one node
// knows it. Create it with NewRevocations, start its broker (through the
// chat hub), then Start it.
//
// The record lives on channel RevokedChannel, which the broker retains
// only in part (the last N publications, and maybe only for
// --history-age). So that a logout outlives that retention, the channel
// is compacted: snapshots listing every unexpired revocation are published
// after every `every` revocations (by the node whose revocation was the
// every-th in the channel's order, which every node agrees on) and at
// least every `interval` while there is something a snapshot would add
// or keep alive. A node loading the record applies everything retained:
// the latest snapshot and whatever came after it are always in there.
type Revocations struct {
	node       string
	broker     transport.Broker
	log        *slog.Logger
	now        func() time.Time
	disconnect func(session string) // set by Start

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

	ctx      context.Context // cancelled by Shutdown
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutOnce sync.Once
	shutDone chan struct{}
}

var _ transport.Handler = (*Revocations)(nil)

// NewRevocations validates cfg and returns a record that is not started.
func NewRevocations(cfg RevocationConfig) (*Revocations, error) {
	if cfg.Node == "" {
		return nil, ErrRevocationsNoNode
	}
	if cfg.Broker == nil {
		return nil, ErrRevocationsNoBroker
	}
	if cfg.HistoryMaxAge < 0 || cfg.SnapshotEvery < 0 || cfg.SnapshotInterval < 0 || cfg.MaxRevocations < 0 {
		return nil, ErrRevocationsNegative
	}
	rv := &Revocations{
		node:     cfg.Node,
		broker:   cfg.Broker,
		log:      cfg.Logger,
		now:      cfg.Now,
		every:    orDefault(cfg.SnapshotEvery, DefaultRevocationSnapshotEvery),
		interval: cfg.SnapshotInterval,
		maxAge:   cfg.HistoryMaxAge,
		max:      orDefault(cfg.MaxRevocations, DefaultMaxRevocations),
		kick:     make(chan struct{}, 1),
		m:        make(map[string]int64),
		shutDone: make(chan struct{}),
	}
	if rv.interval == 0 {
		rv.interval = DefaultRevocationSnapshotInterval
	}
	if rv.maxAge > 0 && rv.interval > rv.maxAge/2 {
		rv.interval = max(rv.maxAge/2, time.Millisecond)
	}
	rv.jitter = time.Duration(rand.Int64N(int64(rv.interval/4) + 1))
	if rv.log == nil {
		rv.log = slog.New(slog.DiscardHandler)
	}
	rv.log = rv.log.With("component", "revocations")
	if rv.now == nil {
		rv.now = time.Now
	}
	rv.ctx, rv.cancel = context.WithCancel(context.Background())
	return rv, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Start begins loading the record in the background, and keeping it:
// pruning expired revocations and taking snapshots. The broker must be
// started already. disconnect is called with every session the node
// learns is revoked (chat.Hub.DisconnectSession closes its connections);
// it must not block.
func (rv *Revocations) Start(ctx context.Context, disconnect func(session string)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !rv.started.CompareAndSwap(false, true) {
		return ErrRevocationsStarted
	}
	rv.disconnect = disconnect
	rv.goTracked(rv.load)
	rv.goTracked(rv.loop)
	return nil
}

// goTracked runs f in a goroutine that Shutdown waits for.
func (rv *Revocations) goTracked(f func()) {
	rv.wg.Add(1)
	go func() {
		defer rv.wg.Done()
		f()
	}()
}

// Shutdown stops loading and keeping the record and waits for its
// goroutines until ctx ends. It does not close the broker. Safe to call
// twice.
func (rv *Revocations) Shutdown(ctx context.Context) error {
	rv.shutOnce.Do(func() {
		rv.cancel()
		go func() {
			rv.wg.Wait()
			close(rv.shutDone)
		}()
	})
	select {
	case <-rv.shutDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Loaded reports whether the node has loaded the cluster's session
// revocations. Until it has, Revoked cannot be trusted: package web
// refuses sessions meanwhile, and readiness should wait for it.
func (rv *Revocations) Loaded() bool { return rv.loaded.Load() }

// Stats returns how many revocations the node remembers and how many it
// had to forget early because of RevocationConfig.MaxRevocations.
func (rv *Revocations) Stats() (live int, dropped uint64) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.m), rv.dropped
}

// Revoke records, cluster-wide, that session id must no longer be
// accepted; until is when the session would have expired anyway. Open
// connections of that session are disconnected.
func (rv *Revocations) Revoke(ctx context.Context, id string, until time.Time) error {
	if id == "" {
		return ErrEmptySession
	}
	ev := revocationEvent{Kind: kindRevoke, Session: id, Until: until.UnixMilli(), Node: rv.node}
	pub, err := rv.broker.Publish(ctx, RevokedChannel, ev.marshal(), transport.PublishOptions{})
	if err != nil {
		return fmt.Errorf("store: revoke session: %w", err)
	}
	if rv.insert(id, ev.Until) {
		rv.disconnectSession(id)
	}
	// The snapshot loop normally keeps up; when it does not (its node
	// died, or revocations come faster than it publishes) the logouts
	// themselves compact, so that the channel's retention is never
	// outrun.
	if rv.loaded.Load() && rv.overdue(pub) {
		if err := rv.publishSnapshot(ctx, &pub); err != nil {
			rv.log.Warn("publishing revocation snapshot", "err", err)
		}
	}
	return nil
}

// overdue reports whether more than 2*every publications separate pub
// from the latest snapshot known here, so that pub's author must compact
// before retention could drop that snapshot.
func (rv *Revocations) overdue(pub transport.Publication) bool {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.overdueLocked(pub)
}

func (rv *Revocations) overdueLocked(pub transport.Publication) bool {
	limit := uint64(2 * rv.every)
	if pub.Epoch != rv.snapEpoch {
		return pub.Offset >= limit
	}
	return pub.Offset >= rv.snapOffset+limit
}

// noteSnapshot records where a snapshot (its first part) landed.
func (rv *Revocations) noteSnapshotLocked(pub transport.Publication) {
	if pub.Offset == 0 {
		return
	}
	if pub.Epoch != rv.snapEpoch || pub.Offset > rv.snapOffset {
		rv.snapEpoch, rv.snapOffset = pub.Epoch, pub.Offset
	}
}

// Revoked reports whether session id was revoked on any node.
func (rv *Revocations) Revoked(id string) bool {
	rv.mu.Lock()
	until, ok := rv.m[id]
	rv.mu.Unlock()
	return ok && until > rv.now().UnixMilli()
}

// insert records one revocation and reports whether it is news.
func (rv *Revocations) insert(id string, until int64) bool {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return rv.insertLocked(id, until, rv.now())
}

func (rv *Revocations) insertLocked(id string, until int64, now time.Time) bool {
	if until <= now.UnixMilli() {
		return false
	}
	old, ok := rv.m[id]
	if ok && old >= until {
		return false
	}
	if !ok && len(rv.m) >= rv.max {
		rv.makeRoomLocked(now)
	}
	rv.m[id] = until
	return !ok
}

// makeRoomLocked frees one place in a full map: expired entries go first;
// failing that, the one closest to its expiry is forgotten, and counted.
func (rv *Revocations) makeRoomLocked(now time.Time) {
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
		rv.log.Warn("revocation table full: forgetting the revocations closest to expiry",
			"max", rv.max, "dropped_total", rv.dropped)
	}
}

func (rv *Revocations) pruneLocked(now time.Time) int {
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

// disconnectSession hands a newly revoked session to the disconnect
// function Start was given.
func (rv *Revocations) disconnectSession(id string) {
	if rv.disconnect != nil {
		rv.disconnect(id)
	}
}

// HandlePublication takes a publication on RevokedChannel from the
// broker (through the chat hub); other channels are ignored. It never
// blocks.
func (rv *Revocations) HandlePublication(channel string, pub transport.Publication) {
	if channel != RevokedChannel {
		return
	}
	rv.mu.Lock()
	if !rv.loaded.Load() {
		// Applied after the retained history, in order.
		rv.pending = append(rv.pending, pub)
		rv.mu.Unlock()
		return
	}
	fresh, snapshot := rv.applyLocked(pub, rv.now())
	rv.mu.Unlock()
	for _, id := range fresh {
		rv.disconnectSession(id)
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
func (rv *Revocations) applyLocked(pub transport.Publication, now time.Time) (fresh []string, snapshot bool) {
	if pub.Offset != 0 {
		if pub.Epoch == rv.epoch && pub.Offset <= rv.offset {
			return nil, false // already applied (history and live overlap)
		}
		rv.epoch, rv.offset = pub.Epoch, pub.Offset
	}
	ev, ok := decodeRevocation(pub.Data)
	if !ok {
		return nil, false
	}
	switch ev.Kind {
	case kindRevoke:
		if ev.Session == "" {
			return nil, false
		}
		if rv.insertLocked(ev.Session, ev.Until, now) {
			fresh = append(fresh, ev.Session)
		}
		rv.since++
		// Every node sees the channel in one order, so exactly one of
		// them, the author of the every-th revocation, takes the
		// snapshot; if it is gone, the author of the next every-th does.
		return fresh, rv.since%rv.every == 0 && ev.Node == rv.node
	case kindRevokeSnapshot:
		for id, until := range ev.Revoked {
			if rv.insertLocked(id, until, now) {
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

// load subscribes to the revocation channel and loads what it retains,
// retrying until it succeeds or Shutdown is called.
func (rv *Revocations) load() {
	backoff := 100 * time.Millisecond
	for {
		err := rv.loadOnce()
		if err == nil {
			return
		}
		rv.log.Warn("loading session revocations", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-rv.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (rv *Revocations) loadOnce() error {
	ctx, cancel := context.WithTimeout(rv.ctx, revocationTimeout)
	defer cancel()
	if err := rv.broker.Subscribe(ctx, RevokedChannel); err != nil {
		return err
	}
	res, err := rv.broker.History(ctx, RevokedChannel, transport.HistoryRequest{})
	if err != nil {
		return err
	}
	now := rv.now()
	rv.mu.Lock()
	rv.lastSnap = now
	var fresh []string
	for _, p := range append(res.Publications, rv.pending...) {
		f, _ := rv.applyLocked(p, now)
		fresh = append(fresh, f...)
	}
	rv.pending = nil
	rv.loaded.Store(true)
	n := len(rv.m)
	rv.mu.Unlock()
	for _, id := range fresh {
		rv.disconnectSession(id)
	}
	rv.log.Debug("session revocations loaded", "live", n, "retained", len(res.Publications))
	return nil
}

// loop prunes expired revocations and publishes snapshots when this
// node's turn comes (kick) or the interval has passed.
func (rv *Revocations) loop() {
	tick := time.NewTicker(max(min(rv.interval/4, pruneEvery), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-rv.ctx.Done():
			return
		case <-rv.kick:
		case <-tick.C:
			now := rv.now()
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
		if err := rv.publishSnapshot(rv.ctx, nil); err != nil && rv.ctx.Err() == nil {
			rv.log.Warn("publishing revocation snapshot", "err", err)
		}
	}
}

// snapshotDueLocked: the interval (plus this node's jitter) has passed
// since the last snapshot, and a snapshot would cover revocations that
// came after it, or keep live ones from aging out of the broker.
func (rv *Revocations) snapshotDueLocked(now time.Time) bool {
	if !rv.loaded.Load() || now.Sub(rv.lastSnap) < rv.interval+rv.jitter {
		return false
	}
	return rv.since > 0 || (rv.maxAge > 0 && len(rv.m) > 0)
}

// publishSnapshot publishes every unexpired revocation this node knows,
// in parts of snapshotPartSize. With a trigger (a logout that found the
// channel overdue) it does not when a snapshot landed after the
// trigger's overdue point meanwhile: concurrent logouts all find it
// overdue, and one snapshot serves them all.
func (rv *Revocations) publishSnapshot(ctx context.Context, trigger *transport.Publication) error {
	rv.snapMu.Lock()
	defer rv.snapMu.Unlock()
	now := rv.now()
	ms := now.UnixMilli()
	rv.mu.Lock()
	if trigger != nil && !rv.overdueLocked(*trigger) {
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
		ev := revocationEvent{Kind: kindRevokeSnapshot, Node: rv.node, Revoked: p, Part: i, Parts: len(parts)}
		pub, err := rv.broker.Publish(ctx, RevokedChannel, ev.marshal(), transport.PublishOptions{})
		if err != nil {
			return fmt.Errorf("store: revocation snapshot: %w", err)
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
