package cluster

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// countingHandler counts the memberlist records logged at warn or above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == "memberlist" {
				h.n.Add(1)
				return false
			}
			return true
		})
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestGossipJunkIsCountedNotFlooded: every garbage packet to the gossip
// port makes memberlist report an error. They are all counted, and logged
// at most a few times a second, so junk cannot fill the node's log.
func TestGossipJunkIsCountedNotFlooded(t *testing.T) {
	var logged atomic.Int64
	a, _ := startNode(t, "a", "127.0.0.1:0", nil, testKey, func(c *Config) {
		c.Logger = slog.New(countingHandler{&logged})
	})
	conn, err := net.Dial("udp", a.BindAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const packets = 500
	start := time.Now()
	junk := []byte(strings.Repeat("junk", 16))
	for range packets {
		if _, err := conn.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	clustertest.WaitFor(t, 10*time.Second, "most junk packets counted", func() bool { return a.GossipProblems() >= packets/2 })
	seconds := time.Since(start).Seconds()
	if max := int64(problemLogsPerSecond * (seconds + 2)); logged.Load() > max {
		t.Fatalf("%d memberlist problem lines logged for %d counted in %.1fs, want at most %d", logged.Load(), a.GossipProblems(), seconds, max)
	}
	t.Logf("%d junk packets: %d counted, %d lines logged in %.1fs", packets, a.GossipProblems(), logged.Load(), seconds)
}
