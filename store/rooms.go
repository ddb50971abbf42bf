package store

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// RoomsChannel is the broker channel the private rooms live on. The chat
// hub hands its deliveries on "s:" channels to Rooms.HandlePublication.
const RoomsChannel = "s:rooms"

const (
	// DefaultMaxPrivateRooms bounds the private rooms the cluster keeps.
	DefaultMaxPrivateRooms = 100_000
	// DefaultMaxRoomMembers bounds the members of one private room.
	DefaultMaxRoomMembers = 1000
	// roomsPartSize is how many rooms one snapshot publication carries.
	roomsPartSize = 200
)

// Kinds of room events.
const (
	kindRoomCreate = "c" // a claim on a room: the first in channel order wins
	kindRoomInvite = "i"
	kindRoomRemove = "x"
	kindRoomsSnap  = "R"
)

// PrivateRoom is one private room as the cluster knows it. The short keys
// are the stored format.
type PrivateRoom struct {
	Name    string   `json:"n"`
	Owner   string   `json:"o,omitempty"`
	Claim   string   `json:"c,omitempty"`
	Members []string `json:"m,omitempty"` // sorted; the owner is one
}

// RoomsConfig configures Rooms. Zero values mean the documented defaults.
type RoomsConfig struct {
	// Node and Broker are as in AccountsConfig. Required.
	Node   string
	Broker transport.Broker
	// HistoryMaxAge, SnapshotEvery and SnapshotInterval are as in
	// RevocationConfig.
	// HistorySize is the broker's per-channel retention (--history):
	// snapshots come at least every HistorySize/4 entries, so that a
	// small retention never drops what the last snapshot lacks. 0 means
	// unknown (SnapshotEvery alone decides).
	HistorySize      int
	HistoryMaxAge    time.Duration
	SnapshotEvery    int
	SnapshotInterval time.Duration
	// MaxRooms bounds the private rooms; MaxMembers the members of one.
	// Every node must have the same values. Defaults
	// DefaultMaxPrivateRooms and DefaultMaxRoomMembers.
	MaxRooms, MaxMembers int
	// Logger receives the logs. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Rooms is the cluster's record of private rooms and their members, as
// one node knows it: a table replicated through the broker channel
// RoomsChannel and compacted by snapshots (compactLog). A room is made
// private exactly once: the first claim in the channel's order wins on
// every node. A room the record does not know is public.
type Rooms struct {
	table
	max, maxMem int
	notify      func(room, user string) // set by Start: user was removed

	// Guarded by log.mu.
	m map[string]*PrivateRoom
}

var _ transport.Handler = (*Rooms)(nil)

// NewRooms validates cfg and returns a record that is not started.
func NewRooms(cfg RoomsConfig) (*Rooms, error) {
	if cfg.Node == "" {
		return nil, ErrRoomsNoNode
	}
	if cfg.Broker == nil {
		return nil, ErrRoomsNoBroker
	}
	if cfg.HistoryMaxAge < 0 || cfg.HistorySize < 0 || cfg.SnapshotEvery < 0 || cfg.SnapshotInterval < 0 || cfg.MaxRooms < 0 || cfg.MaxMembers < 0 {
		return nil, ErrRoomsNegative
	}
	rs := &Rooms{
		max:    orDefault(cfg.MaxRooms, DefaultMaxPrivateRooms),
		maxMem: orDefault(cfg.MaxMembers, DefaultMaxRoomMembers),
		m:      make(map[string]*PrivateRoom),
	}
	rs.table = table{newCompactLog(logConfig{
		name:     "rooms",
		channel:  RoomsChannel,
		snapKind: kindRoomsSnap,
		node:     cfg.Node,
		broker:   cfg.Broker,
		every:    cfg.SnapshotEvery,
		retained: cfg.HistorySize,
		interval: cfg.SnapshotInterval,
		maxAge:   cfg.HistoryMaxAge,
		log:      cfg.Logger,
		now:      cfg.Now,
	}, (*roomTable)(rs))}
	return rs, nil
}

// Start begins loading the record in the background, and keeping it. The
// broker must be started already. notify is called, without blocking,
// for every member the node learns was removed from a private room.
func (rs *Rooms) Start(ctx context.Context, notify func(room, user string)) error {
	rs.notify = notify
	return rs.begin(ctx, ErrRoomsStarted)
}

// Lookup returns a copy of room's record, when it is private.
func (rs *Rooms) Lookup(room string) (PrivateRoom, bool) {
	rs.log.mu.Lock()
	defer rs.log.mu.Unlock()
	r := rs.m[room]
	if r == nil {
		return PrivateRoom{}, false
	}
	cp := *r
	cp.Members = slices.Clone(r.Members)
	return cp, true
}

// Owner returns the private room's owner.
func (rs *Rooms) Owner(room string) (string, bool) {
	rs.log.mu.Lock()
	defer rs.log.mu.Unlock()
	if r := rs.m[room]; r != nil {
		return r.Owner, true
	}
	return "", false
}

// Access reports whether room is private and, if so, whether user is
// one of its members. Before the record is loaded it answers private and
// not a member: nobody gets into a room that may be private.
func (rs *Rooms) Access(room, user string) (private, member bool) {
	if !rs.Loaded() {
		return true, false
	}
	rs.log.mu.Lock()
	defer rs.log.mu.Unlock()
	r := rs.m[room]
	if r == nil {
		return false, false
	}
	_, found := slices.BinarySearch(r.Members, user)
	return true, found
}

// Create makes room private with owner as its first member. Exactly one
// of several creations of one room succeeds; the others, and a creation
// of a room that is private already, get ErrRoomTaken.
func (rs *Rooms) Create(ctx context.Context, room, owner string) error {
	if !rs.Loaded() {
		return ErrRoomsLoading
	}
	if _, ok := rs.Lookup(room); ok {
		return ErrRoomTaken
	}
	claim := randomID()
	ev := logEvent{Kind: kindRoomCreate, Room: &PrivateRoom{Name: room, Owner: owner, Claim: claim}}
	if err := rs.change(ctx, &ev); err != nil {
		return err
	}
	r, ok := rs.Lookup(room)
	switch {
	case ok && r.Claim == claim:
		return nil
	case ok:
		return ErrRoomTaken
	default:
		return ErrRoomsFull
	}
}

// Invite adds user to the private room.
func (rs *Rooms) Invite(ctx context.Context, room, user string) error {
	return rs.member(ctx, kindRoomInvite, room, user)
}

// Remove takes user out of the private room; the owner stays.
func (rs *Rooms) Remove(ctx context.Context, room, user string) error {
	return rs.member(ctx, kindRoomRemove, room, user)
}

func (rs *Rooms) member(ctx context.Context, kind, room, user string) error {
	if !rs.Loaded() {
		return ErrRoomsLoading
	}
	r, ok := rs.Lookup(room)
	switch {
	case !ok:
		return ErrNoRoom
	case kind == kindRoomRemove && user == r.Owner:
		return ErrRemoveOwner
	case kind == kindRoomInvite && len(r.Members) >= rs.maxMem:
		return ErrRoomsFull
	}
	ev := logEvent{Kind: kind, Room: &PrivateRoom{Name: room, Members: []string{user}}}
	return rs.change(ctx, &ev)
}

// change publishes ev and waits until this node has applied it.
func (rs *Rooms) change(ctx context.Context, ev *logEvent) error {
	ctx, cancel := context.WithTimeout(ctx, tableTimeout)
	defer cancel()
	pub, err := rs.log.publish(ctx, ev)
	if err != nil {
		return err
	}
	return rs.log.waitApplied(ctx, pub)
}

// roomTable is the Rooms' map as its compactLog sees it.
type roomTable Rooms

func (t *roomTable) applyLocked(ev *logEvent, _ time.Time) (entry bool, after func()) {
	if ev.Kind == kindRoomsSnap {
		for _, r := range ev.Rooms {
			if len(t.m) < t.max || t.m[r.Name] != nil {
				cp := r
				t.m[r.Name] = &cp
			}
		}
		return false, nil
	}
	ch := ev.Room
	if ch == nil || ch.Name == "" {
		return false, nil
	}
	r := t.m[ch.Name]
	switch ev.Kind {
	case kindRoomCreate:
		if r != nil || len(t.m) >= t.max || ch.Owner == "" {
			return true, nil
		}
		t.m[ch.Name] = &PrivateRoom{Name: ch.Name, Owner: ch.Owner, Claim: ch.Claim, Members: []string{ch.Owner}}
	case kindRoomInvite:
		if r == nil || len(ch.Members) != 1 || len(r.Members) >= t.maxMem {
			return true, nil
		}
		if i, found := slices.BinarySearch(r.Members, ch.Members[0]); !found {
			r.Members = slices.Insert(r.Members, i, ch.Members[0])
		}
	case kindRoomRemove:
		if r == nil || len(ch.Members) != 1 || ch.Members[0] == r.Owner {
			return true, nil
		}
		user := ch.Members[0]
		if i, found := slices.BinarySearch(r.Members, user); found {
			r.Members = slices.Delete(r.Members, i, i+1)
			after = func() {
				if t.notify != nil {
					t.notify(ch.Name, user)
				}
			}
		}
	default:
		return false, nil
	}
	return true, after
}

func (t *roomTable) snapshotLocked(time.Time) []logEvent {
	var parts []logEvent
	cur := make([]PrivateRoom, 0, min(len(t.m), roomsPartSize))
	members := 0
	for _, r := range t.m {
		if len(cur) == roomsPartSize || members >= roomsPartSize*10 {
			parts = append(parts, logEvent{Rooms: cur})
			cur = make([]PrivateRoom, 0, roomsPartSize)
			members = 0
		}
		members += len(r.Members)
		cp := *r
		cp.Members = slices.Clone(r.Members)
		cur = append(cur, cp)
	}
	return append(parts, logEvent{Rooms: cur})
}

func (t *roomTable) pruneLocked(time.Time) {}

func (t *roomTable) aliveLocked() bool { return len(t.m) > 0 }
