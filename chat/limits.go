package chat

import (
	"sync"
	"time"
)

// Rate limits: a connection's token bucket (limiter), and the buckets the
// hub keeps per name (userLimits): one-shot posts per user, the server
// API's senders, room creations per user.

// limiter is a token bucket; rate <= 0 means unlimited. It is used only
// under Client.op.
type limiter struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func (l *limiter) allow(now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	if !l.last.IsZero() {
		l.tokens += now.Sub(l.last).Seconds() * l.rate
		if l.tokens > l.burst {
			l.tokens = l.burst
		}
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// charge takes n tokens for work already done (history sent), going
// into debt if it must: the frames that follow are refused until the
// bucket has refilled.
func (l *limiter) charge(n float64) {
	if l.rate > 0 {
		l.tokens -= n
	}
}

// Bounds of a userLimits table: from limitsKeep buckets on, a new one
// first makes the table forget the buckets that have filled up again
// (a new bucket is the same), and the next sweep waits until the table
// has doubled, so that sweeping stays linear overall; at limitsMost, if
// sweeping is not enough, it forgets all of them: a moment's looser
// limit rather than unbounded memory.
const (
	limitsKeep = 4096
	limitsMost = 10_000
)

// userLimits holds a token bucket per name. They are per node: a user
// whose requests a load balancer spreads gets that much on each node.
type userLimits struct {
	mu   sync.Mutex
	m    map[string]*limiter
	next int // sweep when m reaches it
}

// allow takes a token from name's bucket, which has rate tokens a
// second and holds burst; rate <= 0 allows everything.
func (u *userLimits) allow(now time.Time, name string, rate float64, burst int) bool {
	if rate <= 0 {
		return true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.m[name]
	if l == nil {
		if u.m == nil {
			u.m = make(map[string]*limiter)
		}
		if n := len(u.m); n >= max(u.next, limitsKeep) || n >= limitsMost {
			u.sweep(now)
		}
		l = &limiter{rate: rate, burst: float64(burst), tokens: float64(burst)}
		u.m[name] = l
	}
	return l.allow(now)
}

func (u *userLimits) sweep(now time.Time) {
	for k, l := range u.m {
		if l.tokens+now.Sub(l.last).Seconds()*l.rate >= l.burst {
			delete(u.m, k)
		}
	}
	if len(u.m) >= limitsMost {
		clear(u.m)
	}
	u.next = 2 * len(u.m)
}

// len reports how many buckets the table holds.
func (u *userLimits) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.m)
}

// allowCreate takes one of user's room creations for room, which has no
// retained history: true unless user created RoomsPerHour rooms within
// the hour. A private room is no creation here: its owner made it
// through the rooms table, which bounds it.
func (h *Hub) allowCreate(user, room string) bool {
	if h.roomsPerHour <= 0 || h.privateOwner(room) != "" {
		return true
	}
	return h.creations.allow(h.now(), user, float64(h.roomsPerHour)/3600, h.roomsPerHour)
}
