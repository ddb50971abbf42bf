package store

import "container/heap"

// DefaultMaxRevocationsPerUser is K: a user with more live revocations
// has all but the newest folded into one record, "the user's sessions
// issued until T are revoked". Someone who logs out 64 times within one
// session lifetime is flooding the table, not using it.
const DefaultMaxRevocationsPerUser = 64

// revEntry is one record of the revocation table: a logged-out session,
// or a user's fold (session == "").
type revEntry struct {
	session string
	user    *userRevs
	// issued is the Unix ms the session was issued at (0: unknown); for
	// a fold, sessions of the user issued at or before it are revoked.
	issued int64
	until  int64 // Unix ms the record matters until
	index  int   // in revTable.expiry
}

// userRevs is what the table holds for one user. The user "" collects
// the revocations whose user is unknown (snapshots from before records
// carried one); they are never folded.
type userRevs struct {
	name     string
	sessions map[string]*revEntry
	newest   *revEntry // the latest session inserted, kept out of folds
	fold     *revEntry // nil until the user has one
	index    int       // in revTable.crowded
}

// records is how many places the user takes in the table.
func (u *userRevs) records() int {
	if u.fold != nil {
		return len(u.sessions) + 1
	}
	return len(u.sessions)
}

// revTable is the Revocations' record: sessions by id, users by name,
// every record in a heap by expiry (pruning pops what expired) and every
// user in a heap by how many places they take (a full table takes room
// from the most crowded user). Insertion and eviction are O(log n).
// It is not safe for concurrent use: Revocations holds its log's mu.
type revTable struct {
	max, perUser int
	sessions     map[string]*revEntry
	users        map[string]*userRevs
	expiry       indexHeap[*revEntry] // soonest expiry first
	crowded      indexHeap[*userRevs] // most places first
	dropped      uint64               // revocations forgotten before they expired
}

func newRevTable(max, perUser int) *revTable {
	return &revTable{
		max:      max,
		perUser:  perUser,
		sessions: make(map[string]*revEntry),
		users:    make(map[string]*userRevs),
		expiry:   indexHeap[*revEntry]{before: func(a, b *revEntry) bool { return a.until < b.until }},
		crowded:  indexHeap[*userRevs]{before: func(a, b *userRevs) bool { return a.records() > b.records() }},
	}
}

// len is how many records the table holds.
func (t *revTable) len() int { return len(t.expiry.s) }

// revoked reports whether session id itself was revoked, at ms.
func (t *revTable) revoked(id string, ms int64) bool {
	e, ok := t.sessions[id]
	return ok && e.until > ms
}

// covers reports whether user's fold revokes a session issued at issued
// (Unix ms), at ms.
func (t *revTable) covers(user string, issued, ms int64) bool {
	u := t.users[user]
	return u != nil && u.fold != nil && u.fold.until > ms && issued > 0 && issued <= u.fold.issued
}

// insert records that session (of user, issued then) is revoked until
// until, at now (Unix ms). It reports whether the session is newly known
// as revoked.
func (t *revTable) insert(session, user string, issued, until, now int64) bool {
	if until <= now {
		return false
	}
	if e, ok := t.sessions[session]; ok {
		if until > e.until {
			e.until = until
			heap.Fix(&t.expiry, e.index)
		}
		return false
	}
	if issued <= 0 {
		user = "" // a fold could not cover it
	}
	if t.len() >= t.max {
		t.makeRoom(now)
	}
	u := t.user(user)
	e := &revEntry{session: session, user: u, issued: issued, until: until}
	t.sessions[session] = e
	u.sessions[session] = e
	u.newest = e
	heap.Push(&t.expiry, e)
	t.recount(u)
	if user != "" && len(u.sessions) > t.perUser {
		t.foldUser(u, true)
	}
	return true
}

// insertFold merges a fold from a snapshot into user's.
func (t *revTable) insertFold(user string, issued, until, now int64) {
	if user == "" || until <= now {
		return
	}
	u := t.users[user]
	if (u == nil || u.fold == nil) && t.len() >= t.max {
		t.makeRoom(now)
	}
	u = t.user(user)
	t.mergeFold(u, issued, until)
	t.recount(u)
}

func (t *revTable) user(name string) *userRevs {
	u := t.users[name]
	if u == nil {
		u = &userRevs{name: name, sessions: make(map[string]*revEntry)}
		t.users[name] = u
		heap.Push(&t.crowded, u)
	}
	return u
}

// mergeFold widens u's fold to sessions issued until issued, for until.
func (t *revTable) mergeFold(u *userRevs, issued, until int64) {
	if u.fold == nil {
		u.fold = &revEntry{user: u, issued: issued, until: until}
		heap.Push(&t.expiry, u.fold)
		return
	}
	u.fold.issued = max(u.fold.issued, issued)
	if until > u.fold.until {
		u.fold.until = until
		heap.Fix(&t.expiry, u.fold.index)
	}
}

// foldUser folds u's sessions into its fold record, all of them or all
// but the newest (which keeps an exact record, so that a logout that
// races a connection's registration is still seen by its id).
func (t *revTable) foldUser(u *userRevs, keepNewest bool) {
	for id, e := range u.sessions {
		if keepNewest && e == u.newest {
			continue
		}
		t.mergeFold(u, e.issued, e.until)
		heap.Remove(&t.expiry, e.index)
		delete(t.sessions, id)
		delete(u.sessions, id)
	}
	if !keepNewest {
		u.newest = nil
	}
	t.recount(u)
}

// remove takes e out of the table.
func (t *revTable) remove(e *revEntry) {
	heap.Remove(&t.expiry, e.index)
	u := e.user
	if e.session == "" {
		u.fold = nil
	} else {
		delete(t.sessions, e.session)
		delete(u.sessions, e.session)
		if u.newest == e {
			u.newest = nil
		}
	}
	t.recount(u)
}

// recount restores u's place in the crowded heap, and forgets a user
// with nothing left.
func (t *revTable) recount(u *userRevs) {
	if u.records() == 0 {
		heap.Remove(&t.crowded, u.index)
		delete(t.users, u.name)
		return
	}
	heap.Fix(&t.crowded, u.index)
}

// prune forgets every record that expired by now (Unix ms) and returns
// how many.
func (t *revTable) prune(now int64) int {
	n := 0
	for len(t.expiry.s) > 0 && t.expiry.s[0].until <= now {
		t.remove(t.expiry.s[0])
		n++
	}
	return n
}

// makeRoom frees at least one place in a full table. Expired records go
// first; failing that, the user who takes the most places has their
// sessions folded into one record, which forgets no logout of theirs and
// none of anyone else. Only when every user holds a single record (or
// the most crowded is the unknown user "") is a revocation forgotten:
// the one closest to expiry, counted in dropped. It reports whether one
// was.
func (t *revTable) makeRoom(now int64) bool {
	if t.prune(now) > 0 {
		return false
	}
	if u := t.crowded.s[0]; u.name != "" && u.records() > 1 {
		t.foldUser(u, false)
		return false
	}
	t.remove(t.expiry.s[0])
	t.dropped++
	return true
}

// records calls fn with every unexpired record at now (Unix ms), for a
// snapshot.
func (t *revTable) records(now int64, fn func(revRecord)) {
	for _, e := range t.expiry.s {
		if e.until > now {
			fn(revRecord{Session: e.session, User: e.user.name, Issued: e.issued, Until: e.until})
		}
	}
}

// revRecord is one record of the table in a snapshot: a session, or a
// user's fold (no Session).
type revRecord struct {
	Session string `json:"s,omitempty"`
	User    string `json:"u,omitempty"`
	Issued  int64  `json:"t,omitempty"`
	Until   int64  `json:"e"`
}

// placed is what an indexHeap holds: each element keeps its index, so
// that heap.Fix and heap.Remove can find it.
type placed interface{ place(i int) }

func (e *revEntry) place(i int) { e.index = i }
func (u *userRevs) place(i int) { u.index = i }

// indexHeap is a container/heap of elements ordered by before.
type indexHeap[T placed] struct {
	s      []T
	before func(a, b T) bool
}

func (h *indexHeap[T]) Len() int           { return len(h.s) }
func (h *indexHeap[T]) Less(i, j int) bool { return h.before(h.s[i], h.s[j]) }
func (h *indexHeap[T]) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].place(i)
	h.s[j].place(j)
}
func (h *indexHeap[T]) Push(x any) {
	e := x.(T)
	e.place(len(h.s))
	h.s = append(h.s, e)
}
func (h *indexHeap[T]) Pop() any {
	var zero T
	n := len(h.s) - 1
	e := h.s[n]
	h.s[n] = zero
	h.s = h.s[:n]
	return e
}
