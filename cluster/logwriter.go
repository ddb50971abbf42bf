package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// problemLogsPerSecond bounds the memberlist warnings and errors logged in
// one second. Most of them are about packets from outside (junk sent to
// the gossip port, a node with another key), which anyone who can reach
// the port can send by the thousand.
const problemLogsPerSecond = 5

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at the matching level. slog.NewLogLogger alone would log every
// line at one fixed level: memberlist is chatty at DEBUG yet its WARN and
// ERR lines matter, so the level is read from the line itself.
//
// Warnings and errors are counted (Cluster.GossipProblems) and logged at
// most problemLogsPerSecond a second; the first line logged after a
// second that dropped some says how many.
type logWriter struct {
	log      *slog.Logger
	problems atomic.Uint64

	mu      sync.Mutex // guards what follows
	second  time.Time  // start of the current one-second window
	logged  int        // problems logged in this window
	dropped int        // problems not logged since the last one that was
}

func (w *logWriter) Write(p []byte) (int, error) {
	n := len(p)
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug},
		{"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError},
		{"[ERROR]", slog.LevelError},
	} {
		if rest, ok := bytes.CutPrefix(line, []byte(l.tag)); ok {
			level, line = l.level, bytes.TrimSpace(rest)
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	attrs := []any{"component", "memberlist"}
	if level >= slog.LevelWarn {
		w.problems.Add(1)
		dropped, ok := w.allow(time.Now())
		if !ok {
			return n, nil
		}
		if dropped > 0 {
			attrs = append(attrs, "dropped_before", dropped)
		}
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, string(line), attrs...)
	}
	return n, nil
}

// allow reports whether a problem line may be logged now, and how many
// were dropped since the last one that was.
func (w *logWriter) allow(now time.Time) (dropped int, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.second) >= time.Second {
		w.second, w.logged = now, 0
	}
	if w.logged >= problemLogsPerSecond {
		w.dropped++
		return 0, false
	}
	w.logged++
	dropped, w.dropped = w.dropped, 0
	return dropped, true
}
