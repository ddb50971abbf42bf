package store

import (
	"context"
	"log/slog"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Defaults for RevocationConfig.
const (
	DefaultRevocationSnapshotEvery    = DefaultSnapshotEvery
	DefaultRevocationSnapshotInterval = DefaultSnapshotInterval
	// DefaultMaxRevocations bounds the revocations one node remembers:
	// at about 100 bytes each, some 20 MB, and a full snapshot of them is
	// 100 publications of snapshotPartSize, well within a channel's
	// default retention of 1000.
	DefaultMaxRevocations = 200_000
	// snapshotPartSize is how many entries one snapshot publication
	// carries (about 100 KB of JSON).
	snapshotPartSize = 2000
)

// RevokedChannel is the broker channel the revocations live on. The chat
// hub is the broker's handler and hands its deliveries on "s:" channels
// to Revocations.HandlePublication.
const RevokedChannel = "s:revoked"

// Kinds of revocation events.
const (
	kindRevoke = "s"
	// kindRevokeSnapshot is one part of a compaction of RevokedChannel:
	// every revocation still unexpired when it was taken.
	kindRevokeSnapshot = "S"
)

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
	// HistorySize is the broker's per-channel retention (--history):
	// snapshots come at least every HistorySize/4 entries, so that a
	// small retention never drops what the last snapshot lacks. 0 means
	// unknown (SnapshotEvery alone decides).
	HistorySize   int
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
// chat hub), then Start it. The record is a table replicated through the
// broker channel RevokedChannel and compacted by snapshots (compactLog).
type Revocations struct {
	table
	disconnect func(session string) // set by Start
	max        int

	// Guarded by log.mu.
	m       map[string]int64
	dropped uint64
	dropLog time.Time // last warning about dropped revocations
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
	if cfg.HistoryMaxAge < 0 || cfg.HistorySize < 0 || cfg.SnapshotEvery < 0 || cfg.SnapshotInterval < 0 || cfg.MaxRevocations < 0 {
		return nil, ErrRevocationsNegative
	}
	rv := &Revocations{
		max: orDefault(cfg.MaxRevocations, DefaultMaxRevocations),
		m:   make(map[string]int64),
	}
	rv.table = table{newCompactLog(logConfig{
		name:     "revocations",
		channel:  RevokedChannel,
		snapKind: kindRevokeSnapshot,
		node:     cfg.Node,
		broker:   cfg.Broker,
		every:    cfg.SnapshotEvery,
		retained: cfg.HistorySize,
		interval: cfg.SnapshotInterval,
		maxAge:   cfg.HistoryMaxAge,
		log:      cfg.Logger,
		now:      cfg.Now,
	}, (*revocationTable)(rv))}
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
	rv.disconnect = disconnect
	return rv.begin(ctx, ErrRevocationsStarted)
}

// Stats returns how many revocations the node remembers and how many it
// had to forget early because of RevocationConfig.MaxRevocations.
func (rv *Revocations) Stats() (live int, dropped uint64) {
	rv.log.mu.Lock()
	defer rv.log.mu.Unlock()
	return len(rv.m), rv.dropped
}

// Revoke records, cluster-wide, that session id must no longer be
// accepted; until is when the session would have expired anyway. Open
// connections of that session are disconnected.
func (rv *Revocations) Revoke(ctx context.Context, id string, until time.Time) error {
	if id == "" {
		return ErrEmptySession
	}
	ev := logEvent{Kind: kindRevoke, Session: id, Until: until.UnixMilli()}
	if _, err := rv.log.publish(ctx, &ev); err != nil {
		return err
	}
	rv.log.mu.Lock()
	fresh := rv.insertLocked(id, ev.Until, rv.log.now())
	rv.log.mu.Unlock()
	if fresh {
		rv.disconnectSession(id)
	}
	return nil
}

// Revoked reports whether session id was revoked on any node.
func (rv *Revocations) Revoked(id string) bool {
	rv.log.mu.Lock()
	until, ok := rv.m[id]
	rv.log.mu.Unlock()
	return ok && until > rv.log.now().UnixMilli()
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
		rv.log.log.Warn("revocation table full: forgetting the revocations closest to expiry",
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

// revocationTable is the Revocations' map as its compactLog sees it.
type revocationTable Revocations

func (t *revocationTable) applyLocked(ev *logEvent, now time.Time) (entry bool, after func()) {
	rv := (*Revocations)(t)
	var fresh []string
	switch ev.Kind {
	case kindRevoke:
		if ev.Session == "" {
			return false, nil
		}
		if rv.insertLocked(ev.Session, ev.Until, now) {
			fresh = append(fresh, ev.Session)
		}
		entry = true
	case kindRevokeSnapshot:
		for id, until := range ev.Revoked {
			if rv.insertLocked(id, until, now) {
				fresh = append(fresh, id)
			}
		}
	}
	if len(fresh) == 0 {
		return entry, nil
	}
	return entry, func() {
		for _, id := range fresh {
			rv.disconnectSession(id)
		}
	}
}

func (t *revocationTable) snapshotLocked(now time.Time) []logEvent {
	ms := now.UnixMilli()
	var parts []logEvent
	cur := make(map[string]int64, min(len(t.m), snapshotPartSize))
	for id, until := range t.m {
		if until <= ms {
			continue
		}
		if len(cur) == snapshotPartSize {
			parts = append(parts, logEvent{Revoked: cur})
			cur = make(map[string]int64, snapshotPartSize)
		}
		cur[id] = until
	}
	return append(parts, logEvent{Revoked: cur})
}

func (t *revocationTable) pruneLocked(now time.Time) { (*Revocations)(t).pruneLocked(now) }

func (t *revocationTable) aliveLocked() bool { return len(t.m) > 0 }
