package web

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A ticket lets a client open /ws or /api/events with something in the
// URL that is worth nothing once used: browsers cannot set headers on a
// WebSocket or an EventSource, and URLs end up in proxies' access logs.
// The client fetches one (POST /api/ticket, with its cookie or bearer
// token) from the node it is about to connect to, just before
// connecting.
//
// A ticket is "<payload>.<mac>" (seal, purpose "ticket"); payload is
// "node|user|sid|exp|iat|until|nonce": the node it was issued by and for,
// the session it stands for, when the ticket expires (Unix ms) and a
// random id. It is accepted once, by that node only, until it expires:
// the node remembers the ids it accepted until their expiry (usedTickets),
// so once is a local check. Binding a ticket to its node is what makes
// that enough: recording use cluster-wide instead (on the replicated
// logout record) would cost a broker round trip per connection and still
// let two nodes accept one ticket within the replication delay, and it
// would fail with the broker, when clients fail over. docs/protocol.md
// says more.

// DefaultTicketTTL is how long a ticket is valid unless configured.
const DefaultTicketTTL = 30 * time.Second

// handleTicket serves POST /api/ticket: a ticket for the caller's
// session, on this node. Cross-origin callers (the page of another node,
// failing over to this one) are answered with CORS headers.
func (s *Server) handleTicket(w http.ResponseWriter, r *http.Request) {
	if !s.corsAllowed(w, r) {
		return
	}
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "log in first")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"ticket":     s.makeTicket(id),
		"expires_in": int(s.cfg.TicketTTL / time.Second),
	})
}

func (s *Server) makeTicket(id identity) string {
	until := s.now().Add(s.cfg.TicketTTL)
	return s.seal("ticket", s.node, id.user, id.sid, strconv.FormatInt(id.exp.Unix(), 10),
		strconv.FormatInt(id.issued.UnixMilli(), 10), strconv.FormatInt(until.UnixMilli(), 10), newSessionID())
}

// redeemTicket accepts a ticket for this node once, before it expires,
// while its session holds; the error says why not (errBadTicket,
// errOtherNode, errTicketExpired, errTicketUsed, or check's). A ticket
// is spent only when everything else checks out, so one refused because
// the node could not tell yet (503) may be tried again.
func (s *Server) redeemTicket(ctx context.Context, t string) (identity, error) {
	parts, ok := s.unseal("ticket", t, 7)
	if !ok {
		return identity{}, errBadTicket
	}
	exp, err1 := strconv.ParseInt(parts[3], 10, 64)
	iat, err2 := strconv.ParseInt(parts[4], 10, 64)
	until, err3 := strconv.ParseInt(parts[5], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return identity{}, errBadTicket
	}
	if parts[0] != s.node {
		return identity{}, errOtherNode
	}
	now := s.now()
	if now.UnixMilli() >= until {
		return identity{}, errTicketExpired
	}
	// token: the session is confirmed in the store, as for a bearer
	// token.
	id := identity{user: parts[1], sid: parts[2], exp: time.Unix(exp, 0), issued: time.UnixMilli(iat), token: true}
	if !wellFormed(id) {
		return identity{}, errNoSession
	}
	if err := s.check(ctx, id, true); err != nil {
		return id, err
	}
	if !s.tickets.use(parts[6], until, now.UnixMilli()) {
		return identity{}, errTicketUsed
	}
	return id, nil
}

// usedTickets remembers the ids of the tickets a node accepted, each
// until its ticket expires; it forgets expired ones at most once per
// ticket lifetime, so it holds at most about two lifetimes of tickets.
type usedTickets struct {
	ttl time.Duration

	mu      sync.Mutex
	ids     map[string]int64 // id -> expiry, Unix ms
	sweepAt int64            // Unix ms
}

func newUsedTickets(ttl time.Duration) *usedTickets {
	return &usedTickets{ttl: ttl, ids: make(map[string]int64)}
}

// use records id, valid until until, and reports whether it was new.
func (u *usedTickets) use(id string, until, now int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now >= u.sweepAt {
		for k, exp := range u.ids {
			if exp <= now {
				delete(u.ids, k)
			}
		}
		u.sweepAt = now + u.ttl.Milliseconds()
	}
	if _, ok := u.ids[id]; ok {
		return false
	}
	u.ids[id] = until
	return true
}
