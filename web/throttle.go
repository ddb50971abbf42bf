package web

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// throttle is a set of token buckets by key (a client address, a name):
// each allows burst attempts at once and rate per second after that. It
// holds at most max keys; when full it forgets the keys whose buckets
// are full again, and failing that all of them (an attacker who fills it
// gains one fresh burst, never a lockout of others).
type throttle struct {
	rate, burst float64
	max         int

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// defaultThrottleKeys bounds each throttle's memory (about 100 bytes a
// key).
const defaultThrottleKeys = 100_000

func newThrottle(perMinute, burst float64) *throttle {
	return &throttle{rate: perMinute / 60, burst: burst, max: defaultThrottleKeys, m: make(map[string]*bucket)}
}

// take spends one attempt of key. When none is left it reports how long
// until one is.
func (t *throttle) take(key string, now time.Time) (ok bool, retry time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.m[key]
	if b == nil {
		if len(t.m) >= t.max {
			t.sweepLocked(now)
		}
		b = &bucket{tokens: t.burst, at: now}
		t.m[key] = b
	}
	b.tokens = math.Min(t.burst, b.tokens+now.Sub(b.at).Seconds()*t.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / t.rate * float64(time.Second))
}

// check reports, without spending, whether key has an attempt left.
func (t *throttle) check(key string, now time.Time) (ok bool, retry time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.m[key]
	if b == nil {
		return true, 0
	}
	tokens := math.Min(t.burst, b.tokens+now.Sub(b.at).Seconds()*t.rate)
	if tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - tokens) / t.rate * float64(time.Second))
}

func (t *throttle) sweepLocked(now time.Time) {
	for k, b := range t.m {
		if b.tokens+now.Sub(b.at).Seconds()*t.rate >= t.burst {
			delete(t.m, k)
		}
	}
	if len(t.m) >= t.max {
		clear(t.m)
	}
}

// clientAddr is the address a request came from: the peer's IP. Behind a
// proxy every client shares the proxy's address; the limits per address
// then apply to the proxy as a whole (docs/deploy.md).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// tooMany answers 429 with Retry-After.
func tooMany(w http.ResponseWriter, retry time.Duration, message string) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retry.Seconds())))))
	writeError(w, http.StatusTooManyRequests, CodeTooManyAttempts, message)
}
