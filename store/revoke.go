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
	// MaxRevocations caps the records a node keeps. A full table first
	// folds the sessions of the user with the most records into one;
	// only when every user has one record is the one closest to expiry
	// forgotten, and counted (Stats). Default DefaultMaxRevocations.
	MaxRevocations int
	// MaxPerUser is K: a user with more than K revoked sessions has all
	// but the newest folded into one record that revokes every session
	// of the user issued until the latest of them, so that one user's
	// logouts cannot push out anyone else's. Every node of a cluster
	// must have the same value. Default DefaultMaxRevocationsPerUser.
	MaxPerUser int
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

	// Guarded by log.mu.
	t          *revTable
	dropLog    time.Time // last warning about dropped revocations
	dropWarned uint64    // t.dropped at that warning
}

// Session is a session as the revocation record knows it.
type Session struct {
	ID string
	// User and Issued let the record fold a user's many revocations
	// into one; a session without them is kept on its own.
	User   string
	Issued time.Time
	// Until is when the session expires anyway: its revocation is
	// forgotten then.
	Until time.Time
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
	if cfg.HistoryMaxAge < 0 || cfg.HistorySize < 0 || cfg.SnapshotEvery < 0 || cfg.SnapshotInterval < 0 || cfg.MaxRevocations < 0 || cfg.MaxPerUser < 0 {
		return nil, ErrRevocationsNegative
	}
	rv := &Revocations{
		t: newRevTable(orDefault(cfg.MaxRevocations, DefaultMaxRevocations),
			orDefault(cfg.MaxPerUser, DefaultMaxRevocationsPerUser)),
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

// Stats returns how many records (revoked sessions and users' folds) the
// node keeps, and how many revocations it had to forget early because of
// RevocationConfig.MaxRevocations.
func (rv *Revocations) Stats() (live int, dropped uint64) {
	rv.log.mu.Lock()
	defer rv.log.mu.Unlock()
	return rv.t.len(), rv.t.dropped
}

// Revoke records, cluster-wide, that session s must no longer be
// accepted. Open connections of that session are disconnected.
func (rv *Revocations) Revoke(ctx context.Context, s Session) error {
	if s.ID == "" {
		return ErrEmptySession
	}
	ev := logEvent{Kind: kindRevoke, Session: s.ID, User: s.User, Until: s.Until.UnixMilli()}
	if !s.Issued.IsZero() {
		ev.Issued = s.Issued.UnixMilli()
	}
	if _, err := rv.log.publish(ctx, &ev); err != nil {
		return err
	}
	rv.log.mu.Lock()
	fresh := rv.insertLocked(&ev, rv.log.now())
	rv.log.mu.Unlock()
	if fresh {
		rv.disconnectSession(s.ID)
	}
	return nil
}

// Revoked reports whether session id itself was revoked on any node. A
// session that only its user's fold revokes is not: SessionRevoked asks
// for both.
func (rv *Revocations) Revoked(id string) bool {
	now := rv.log.now().UnixMilli()
	rv.log.mu.Lock()
	defer rv.log.mu.Unlock()
	return rv.t.revoked(id, now)
}

// SessionRevoked reports whether session s was revoked on any node,
// itself or by its user's fold (s.User and s.Issued; Until is unused).
func (rv *Revocations) SessionRevoked(s Session) bool {
	now := rv.log.now().UnixMilli()
	rv.log.mu.Lock()
	defer rv.log.mu.Unlock()
	return rv.t.revoked(s.ID, now) || rv.t.covers(s.User, s.Issued.UnixMilli(), now)
}

// insertLocked applies a revocation event and reports whether its
// session is newly revoked.
func (rv *Revocations) insertLocked(ev *logEvent, now time.Time) bool {
	fresh := rv.t.insert(ev.Session, ev.User, ev.Issued, ev.Until, now.UnixMilli())
	rv.warnDroppedLocked(now)
	return fresh
}

// warnDroppedLocked warns, at most once a minute, while the table
// forgets revocations for want of room.
func (rv *Revocations) warnDroppedLocked(now time.Time) {
	if rv.t.dropped == rv.dropWarned || now.Sub(rv.dropLog) < time.Minute {
		return
	}
	rv.dropLog, rv.dropWarned = now, rv.t.dropped
	rv.log.log.Warn("revocation table full of single logouts: forgetting the ones closest to expiry",
		"max", rv.t.max, "dropped_total", rv.t.dropped)
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
		if rv.insertLocked(ev, now) {
			fresh = append(fresh, ev.Session)
		}
		entry = true
	case kindRevokeSnapshot:
		ms := now.UnixMilli()
		// Snapshots from before records carried their user.
		for id, until := range ev.Revoked {
			if rv.t.insert(id, "", 0, until, ms) {
				fresh = append(fresh, id)
			}
		}
		for _, r := range ev.Records {
			switch {
			case r.Session == "":
				rv.t.insertFold(r.User, r.Issued, r.Until, ms)
			case rv.t.insert(r.Session, r.User, r.Issued, r.Until, ms):
				fresh = append(fresh, r.Session)
			}
		}
		rv.warnDroppedLocked(now)
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
	var parts []logEvent
	cur := make([]revRecord, 0, min(t.t.len(), snapshotPartSize))
	t.t.records(now.UnixMilli(), func(r revRecord) {
		if len(cur) == snapshotPartSize {
			parts = append(parts, logEvent{Records: cur})
			cur = make([]revRecord, 0, snapshotPartSize)
		}
		cur = append(cur, r)
	})
	return append(parts, logEvent{Records: cur})
}

func (t *revocationTable) pruneLocked(now time.Time) { t.t.prune(now.UnixMilli()) }

func (t *revocationTable) aliveLocked() bool { return t.t.len() > 0 }
