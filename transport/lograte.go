package transport

import (
	"sync"
	"time"
)

// LogLimit bounds how many lines of one kind are logged a second: lines
// that anyone can cause (a connection, a junk request) must not let a
// flood of them flood the log. The zero value allows
// DefaultLogsPerSecond.
type LogLimit struct {
	// PerSecond is how many lines a second pass. 0 means
	// DefaultLogsPerSecond.
	PerSecond int

	mu      sync.Mutex
	second  time.Time // start of the current one-second window
	logged  int       // lines let through in this window
	dropped int       // lines held back since the last one let through
}

// DefaultLogsPerSecond is LogLimit's default rate.
const DefaultLogsPerSecond = 5

// Allow reports whether a line may be logged at now and, when it may,
// how many were held back since the last one that was (the line should
// say so).
func (l *LogLimit) Allow(now time.Time) (dropped int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.second) >= time.Second {
		l.second, l.logged = now, 0
	}
	limit := l.PerSecond
	if limit == 0 {
		limit = DefaultLogsPerSecond
	}
	if l.logged >= limit {
		l.dropped++
		return 0, false
	}
	l.logged++
	dropped, l.dropped = l.dropped, 0
	return dropped, true
}
