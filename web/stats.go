package web

import (
	"maps"
	"sync"
)

// LoginOK is the outcome CountLogin records for a login that succeeded;
// a refused one is recorded under the error code it was answered with.
const LoginOK = "ok"

// Stats are the server's counters, for the node's metrics.
type Stats struct {
	// Logins counts login attempts by outcome: LoginOK or an error code
	// (bad_name, bad_request, forbidden_origin, unavailable, ...).
	Logins map[string]uint64
}

// outcomes counts events by outcome. A login is rare next to a frame, so
// a mutex is cheap here.
type outcomes struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (o *outcomes) add(outcome string) {
	o.mu.Lock()
	if o.n == nil {
		o.n = make(map[string]uint64)
	}
	o.n[outcome]++
	o.mu.Unlock()
}

func (o *outcomes) snapshot() map[string]uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.n)
}

// CountLogin records the outcome of one login attempt: LoginOK, or the
// code of the error it was answered with. Every way of logging in (name,
// password, token) reports through it, once per attempt. outcome becomes
// a metric label: pass a constant, never a user name or other input.
func (s *Server) CountLogin(outcome string) { s.logins.add(outcome) }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Logins: s.logins.snapshot()}
}
