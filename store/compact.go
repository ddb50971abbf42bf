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

// Defaults for the compacted tables (Revocations, Accounts).
const (
	// DefaultSnapshotEvery is how many entries separate two snapshots.
	DefaultSnapshotEvery = 100
	// DefaultSnapshotInterval is the longest time between two snapshots
	// while there is something a snapshot would add or keep alive.
	DefaultSnapshotInterval = 5 * time.Minute
	// pruneEvery is the longest time between two sweeps of expired
	// entries.
	pruneEvery = time.Minute
	// tableTimeout bounds one broker call of a table.
	tableTimeout = 10 * time.Second
)

// logEvent is a publication on a table's channel. The short keys are the
// stored format: every node, and every retained publication, uses them.
// The envelope (kind, node, part) is the log's; the rest belongs to the
// table whose channel it is on.
type logEvent struct {
	Kind  string `json:"k"`
	Node  string `json:"n,omitempty"`  // node that published it
	Part  int    `json:"i,omitempty"`  // snapshot part, from 0
	Parts int    `json:"pn,omitempty"` // snapshot parts in all
	// At and AtEpoch are the position of the last publication its
	// author had applied when it took the snapshot: the snapshot is the
	// table as of there.
	At      uint64 `json:"at,omitempty"`
	AtEpoch string `json:"ae,omitempty"`

	// Revocations (s:revoked).
	Session string           `json:"s,omitempty"`  // revocation: session id
	User    string           `json:"u,omitempty"`  // revocation: the session's user
	Issued  int64            `json:"t,omitempty"`  // revocation: Unix ms the session was issued at
	Until   int64            `json:"e,omitempty"`  // revocation: Unix ms it matters until
	Records []revRecord      `json:"lr,omitempty"` // snapshot part
	Revoked map[string]int64 `json:"l,omitempty"`  // snapshot part of old: session id -> until

	// Accounts (s:accounts).
	Account  *Account  `json:"a,omitempty"`  // the change, or the claim
	Accounts []Account `json:"al,omitempty"` // snapshot part

	// Private rooms (s:rooms).
	Room  *PrivateRoom  `json:"rm,omitempty"` // the change, or the claim
	Rooms []PrivateRoom `json:"rl,omitempty"` // snapshot part
}

func (e *logEvent) marshal() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Only strings, integers and booleans: Marshal cannot fail.
		panic("store: marshal table event: " + err.Error())
	}
	return b
}

func decodeLogEvent(data []byte) (logEvent, bool) {
	var e logEvent
	if err := json.Unmarshal(data, &e); err != nil || e.Kind == "" {
		return logEvent{}, false
	}
	return e, true
}

// tableState is what a compactLog replicates: a table that entries change
// and snapshots restore. Its methods run under the log's mu.
type tableState interface {
	// applyLocked applies one publication's event. entry reports an
	// entry (which counts toward the next snapshot), after is run once
	// the lock is released (notifications; nil for none).
	applyLocked(ev *logEvent, now time.Time) (entry bool, after func())
	// snapshotLocked returns the events of a snapshot of the table, in
	// parts (at least one; an empty snapshot still resets the count).
	snapshotLocked(now time.Time) []logEvent
	// pruneLocked forgets what expired.
	pruneLocked(now time.Time)
	// aliveLocked reports whether the table holds anything that must be
	// republished to outlive the broker's age limit.
	aliveLocked() bool
}

// table is the part Revocations, Accounts and Rooms share: the log that
// replicates them, and the methods that touch nothing else.
type table struct {
	log *compactLog
}

// begin is the common part of Start: ctx must be live and the table not
// started yet (errStarted otherwise).
func (t table) begin(ctx context.Context, errStarted error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !t.log.start() {
		return errStarted
	}
	return nil
}

// Shutdown stops loading and keeping the table and waits for its
// goroutines until ctx ends. It does not close the broker. Safe to call
// twice.
func (t table) Shutdown(ctx context.Context) error { return t.log.shutdown(ctx) }

// Loaded reports whether the node has loaded the table from the broker.
// Until it has, what the table answers cannot be trusted: package web
// refuses sessions meanwhile, and readiness waits for it.
func (t table) Loaded() bool { return t.log.loaded.Load() }

// HandlePublication takes a publication on the table's channel from the
// broker (through the chat hub); other channels are ignored. It never
// blocks.
func (t table) HandlePublication(channel string, pub transport.Publication) {
	if channel == t.log.channel {
		t.log.handle(pub)
	}
}

// logConfig configures a compactLog.
type logConfig struct {
	name     string // for logs and errors: "revocations"
	channel  string
	snapKind string // the kind of snapshot parts
	node     string
	broker   transport.Broker
	every    int
	retained int // the broker's per-channel retention, 0 if unknown
	interval time.Duration
	maxAge   time.Duration
	log      *slog.Logger
	now      func() time.Time
}

// compactLog replicates a table through one broker channel. Every node
// publishes its changes on the channel and applies the channel's
// publications in its one order, so all nodes agree on the table. The
// channel keeps only its latest publications (and maybe only for
// --history-age), so it is compacted: snapshots of the whole table are
// published after every `every` entries (by the node whose entry was the
// every-th in the channel's order, which every node agrees on) and at
// least every `interval` while there is something a snapshot would add
// or keep alive. A node loading the table applies everything retained:
// the latest snapshot and whatever came after it are always in there.
type compactLog struct {
	logConfig
	state  tableState
	jitter time.Duration // per node, so that timers do not all fire at once

	loaded atomic.Bool
	kick   chan struct{} // buffer 1: the snapshot loop has work
	snapMu sync.Mutex    // one snapshot at a time on this node

	mu      sync.Mutex // guards what follows and the state; a leaf lock
	pending []transport.Publication
	epoch   string // stream position last applied
	offset  uint64
	applied chan struct{} // closed and replaced whenever the position moves
	since   int           // entries since the last snapshot, in channel order
	// lastSnap is when a snapshot was last seen or published; snapEpoch
	// and snapOffset locate it. A change compares its own offset with
	// them: deliveries (and so since) may lag behind a burst of changes,
	// offsets do not.
	lastSnap   time.Time
	snapEpoch  string
	snapOffset uint64

	ctx      context.Context // cancelled by shutdown
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutOnce sync.Once
	shutDone chan struct{}
}

func newCompactLog(cfg logConfig, state tableState) *compactLog {
	if cfg.every == 0 {
		cfg.every = DefaultSnapshotEvery
	}
	if cfg.retained > 0 {
		// A snapshot and the entries since the one before it must fit
		// in what the channel retains, whatever --history says.
		cfg.every = min(cfg.every, max(1, cfg.retained/4))
	}
	if cfg.interval == 0 {
		cfg.interval = DefaultSnapshotInterval
	}
	if cfg.maxAge > 0 && cfg.interval > cfg.maxAge/2 {
		cfg.interval = max(cfg.maxAge/2, time.Millisecond)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	cfg.log = cfg.log.With("component", cfg.name)
	if cfg.now == nil {
		cfg.now = time.Now
	}
	l := &compactLog{
		logConfig: cfg,
		state:     state,
		jitter:    time.Duration(rand.Int64N(int64(cfg.interval/4) + 1)),
		kick:      make(chan struct{}, 1),
		applied:   make(chan struct{}),
		shutDone:  make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// start begins loading the table in the background, and keeping it. The
// broker must be started already. It reports false when called twice.
func (l *compactLog) start() bool {
	if !l.started.CompareAndSwap(false, true) {
		return false
	}
	l.goTracked(l.load)
	l.goTracked(l.loop)
	return true
}

// goTracked runs f in a goroutine that shutdown waits for.
func (l *compactLog) goTracked(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// shutdown stops loading and keeping the table and waits for its
// goroutines until ctx ends. Safe to call twice.
func (l *compactLog) shutdown(ctx context.Context) error {
	l.shutOnce.Do(func() {
		l.cancel()
		go func() {
			l.wg.Wait()
			close(l.shutDone)
		}()
	})
	select {
	case <-l.shutDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publish publishes one entry. The caller applies it locally if it must
// be seen here before its delivery comes back. The log compacts when the
// delivery of snapshots lags (their node died, or entries come faster
// than it publishes), so that the channel's retention is never outrun.
func (l *compactLog) publish(ctx context.Context, ev *logEvent) (transport.Publication, error) {
	ev.Node = l.node
	pub, err := l.broker.Publish(ctx, l.channel, ev.marshal(), transport.PublishOptions{})
	if err != nil {
		return pub, fmt.Errorf("store: %s: %w", l.name, err)
	}
	if l.loaded.Load() && l.overdue(pub) {
		if err := l.publishSnapshot(ctx, &pub); err != nil {
			l.log.Warn("publishing snapshot", "err", err)
		}
	}
	return pub, nil
}

// waitApplied waits until this node has applied pub (or a later
// publication of its epoch). It fails when ctx ends first or the
// channel moved to another epoch, so that whether pub was applied cannot
// be told.
func (l *compactLog) waitApplied(ctx context.Context, pub transport.Publication) error {
	for {
		l.mu.Lock()
		epoch, offset, ch := l.epoch, l.offset, l.applied
		l.mu.Unlock()
		if epoch == pub.Epoch && offset >= pub.Offset {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("store: %s: waiting for our change to come back: %w", l.name, ctx.Err())
		case <-l.ctx.Done():
			return fmt.Errorf("store: %s: %w", l.name, context.Canceled)
		}
	}
}

// overdue reports whether more than 2*every publications separate pub
// from the latest snapshot known here, so that pub's author must compact
// before retention could drop that snapshot.
func (l *compactLog) overdue(pub transport.Publication) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.overdueLocked(pub)
}

func (l *compactLog) overdueLocked(pub transport.Publication) bool {
	limit := uint64(2 * l.every)
	if pub.Epoch != l.snapEpoch {
		return pub.Offset >= limit
	}
	return pub.Offset >= l.snapOffset+limit
}

// noteSnapshotLocked records where a snapshot (its first part) landed.
func (l *compactLog) noteSnapshotLocked(pub transport.Publication) {
	if pub.Offset == 0 {
		return
	}
	if pub.Epoch != l.snapEpoch || pub.Offset > l.snapOffset {
		l.snapEpoch, l.snapOffset = pub.Epoch, pub.Offset
	}
}

// handle takes a publication on the log's channel. It never blocks.
func (l *compactLog) handle(pub transport.Publication) {
	l.mu.Lock()
	if !l.loaded.Load() {
		// Applied after the retained history, in order.
		l.pending = append(l.pending, pub)
		l.mu.Unlock()
		return
	}
	after, snapshot := l.applyLocked(pub, l.now())
	l.mu.Unlock()
	if after != nil {
		after()
	}
	if snapshot {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// applyLocked applies one publication and returns what to run once the
// lock is released, and whether this node is the one to publish the next
// snapshot.
func (l *compactLog) applyLocked(pub transport.Publication, now time.Time) (after func(), snapshot bool) {
	if pub.Offset != 0 {
		if pub.Epoch == l.epoch && pub.Offset <= l.offset {
			return nil, false // already applied (history and live overlap)
		}
		l.epoch, l.offset = pub.Epoch, pub.Offset
		close(l.applied)
		l.applied = make(chan struct{})
	}
	ev, ok := decodeLogEvent(pub.Data)
	if !ok {
		return nil, false
	}
	if ev.Kind == l.snapKind {
		// A snapshot is the table as of an earlier point of the order,
		// which this node has applied already: it matters to nodes
		// that load (loadOnce) only.
		if ev.Part == 0 {
			l.since = 0
			l.lastSnap = now
			l.noteSnapshotLocked(pub)
		}
		return nil, false
	}
	entry, after := l.state.applyLocked(&ev, now)
	if !entry {
		return after, false
	}
	l.since++
	// Every node sees the channel in one order, so exactly one of them,
	// the author of the every-th entry, takes the snapshot; if it is
	// gone, the author of the next every-th does.
	return after, l.since%l.every == 0 && ev.Node == l.node
}

// load subscribes to the channel and loads what it retains, retrying
// until it succeeds or shutdown is called.
func (l *compactLog) load() {
	backoff := 100 * time.Millisecond
	for {
		err := l.loadOnce()
		if err == nil {
			return
		}
		l.log.Warn("loading", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (l *compactLog) loadOnce() error {
	ctx, cancel := context.WithTimeout(l.ctx, tableTimeout)
	defer cancel()
	if err := l.broker.Subscribe(ctx, l.channel); err != nil {
		return err
	}
	res, err := l.broker.History(ctx, l.channel, transport.HistoryRequest{})
	if err != nil {
		return err
	}
	now := l.now()
	l.mu.Lock()
	l.lastSnap = now
	var afters []func()
	pubs := append(res.Publications, l.pending...)
	if snap, at, ok := latestSnapshot(pubs, l.snapKind); ok {
		// The table as of the snapshot, then what came after that
		// point, wherever it landed relative to the snapshot's parts.
		for _, ev := range snap {
			if _, after := l.state.applyLocked(&ev, now); after != nil {
				afters = append(afters, after)
			}
		}
		l.epoch, l.offset = at.Epoch, at.Offset
	}
	for _, p := range pubs {
		if after, _ := l.applyLocked(p, now); after != nil {
			afters = append(afters, after)
		}
	}
	l.pending = nil
	l.loaded.Store(true)
	l.mu.Unlock()
	for _, f := range afters {
		f()
	}
	l.log.Debug("loaded", "retained", len(res.Publications))
	return nil
}

// latestSnapshot finds the latest complete snapshot among pubs (one
// stream's retained publications, in order) and returns its parts and
// the position it was taken at.
func latestSnapshot(pubs []transport.Publication, kind string) ([]logEvent, transport.StreamPosition, bool) {
	var parts []logEvent
	var best []logEvent
	var at transport.StreamPosition
	for _, p := range pubs {
		ev, ok := decodeLogEvent(p.Data)
		if !ok || ev.Kind != kind {
			continue
		}
		switch {
		case ev.Part == 0:
			parts = []logEvent{ev}
		case len(parts) > 0 && ev.Part == len(parts) && ev.Node == parts[0].Node && ev.At == parts[0].At:
			parts = append(parts, ev)
		default:
			continue
		}
		if len(parts) == ev.Parts {
			best = parts
			// Taken in an earlier incarnation of the stream (or by an
			// older version): everything retained applies after it.
			at = transport.StreamPosition{}
			if ev.AtEpoch == p.Epoch {
				at = transport.StreamPosition{Offset: ev.At, Epoch: ev.AtEpoch}
			}
		}
	}
	return best, at, best != nil
}

// loop prunes expired entries and publishes snapshots when this node's
// turn comes (kick) or the interval has passed.
func (l *compactLog) loop() {
	tick := time.NewTicker(max(min(l.interval/4, pruneEvery), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
		case <-tick.C:
			now := l.now()
			l.mu.Lock()
			l.state.pruneLocked(now)
			due := l.snapshotDueLocked(now)
			l.mu.Unlock()
			if !due {
				continue
			}
		}
		if !l.loaded.Load() {
			continue
		}
		if err := l.publishSnapshot(l.ctx, nil); err != nil && l.ctx.Err() == nil {
			l.log.Warn("publishing snapshot", "err", err)
		}
	}
}

// snapshotDueLocked: the interval (plus this node's jitter) has passed
// since the last snapshot, and a snapshot would cover entries that came
// after it, or keep live ones from aging out of the broker.
func (l *compactLog) snapshotDueLocked(now time.Time) bool {
	if !l.loaded.Load() || now.Sub(l.lastSnap) < l.interval+l.jitter {
		return false
	}
	return l.since > 0 || (l.maxAge > 0 && l.state.aliveLocked())
}

// publishSnapshot publishes the table in parts. With a trigger (a change
// that found the channel overdue) it does not when a snapshot landed
// after the trigger's overdue point meanwhile: concurrent changes all
// find it overdue, and one snapshot serves them all.
func (l *compactLog) publishSnapshot(ctx context.Context, trigger *transport.Publication) error {
	l.snapMu.Lock()
	defer l.snapMu.Unlock()
	now := l.now()
	l.mu.Lock()
	if trigger != nil && !l.overdueLocked(*trigger) {
		l.mu.Unlock()
		return nil
	}
	parts := l.state.snapshotLocked(now)
	at, atEpoch := l.offset, l.epoch
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, tableTimeout)
	defer cancel()
	var first transport.Publication
	for i := range parts {
		ev := &parts[i]
		ev.Kind, ev.Node, ev.Part, ev.Parts = l.snapKind, l.node, i, len(parts)
		ev.At, ev.AtEpoch = at, atEpoch
		pub, err := l.broker.Publish(ctx, l.channel, ev.marshal(), transport.PublishOptions{})
		if err != nil {
			return fmt.Errorf("store: %s snapshot: %w", l.name, err)
		}
		if i == 0 {
			first = pub
		}
	}
	l.mu.Lock()
	l.noteSnapshotLocked(first)
	// Our part 0 resets the count again when it comes back; until then
	// this keeps the next change from snapshotting once more.
	l.since = 0
	l.lastSnap = now
	l.mu.Unlock()
	return nil
}
