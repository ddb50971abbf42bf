package mesh

import (
	"maps"
	"slices"
	"sync/atomic"
)

// Stats are the broker's counters and sizes, for the node's metrics.
type Stats struct {
	// Takeovers counts channels this node took ownership of, continuing
	// a stream another node or its own replica held; Created, channels it
	// started (no copy anywhere: a new channel, or one whose every copy
	// was lost).
	Takeovers, Created uint64
	// LinkConnects counts connections this node's links made to peers,
	// the first ones and every reconnect; LinkDialFailures the dials that
	// failed; LinkDrops the connections lost or cut.
	LinkConnects, LinkDialFailures, LinkDrops uint64
	// RejectedPeers counts connections to /_mesh/ that failed the
	// handshake: junk, or a node with another secret.
	RejectedPeers uint64
	// FrameAuthFailures counts connections closed because a frame
	// failed to decrypt: altered on the way, replayed, or not sealed with
	// the connection's key.
	FrameAuthFailures uint64
	// Owned and Replicas are the channels this node orders and those it
	// keeps a replica of as backup; Retained is the publications their
	// histories retain in memory, both kinds together. Channels busy at
	// the moment (a takeover holding them) are left out of all three and
	// counted in Busy.
	Owned, Replicas, Retained, Busy int
	// Unconfirmed is the publications the channels this node orders have
	// given an offset but not confirmed yet: waiting for their batch's
	// copy to the backup (and the Log write). It is the replication lag
	// in publications; the publishers wait for it.
	Unconfirmed int
	// RetainedBytes is what those histories take in memory, all channels
	// counted (Config.HistoryBudget bounds it); Evictions counts the
	// histories evicted to keep it under the budget.
	RetainedBytes int64
	Evictions     uint64
}

// linkCounters are counted by the links (link.go), takeovers and
// evictions (budget.go).
type linkCounters struct {
	takeovers, created, connects, dialFailures, drops, rejected, frameAuth, evictions atomic.Uint64
}

// Stats returns the broker's counters, and walks the channel states for
// their sizes, taking each one's lock in turn without waiting for it: a
// scrape never holds up a publication for long, nor waits for a takeover.
func (b *Broker) Stats() Stats {
	st := Stats{
		Takeovers:         b.counts.takeovers.Load(),
		Created:           b.counts.created.Load(),
		LinkConnects:      b.counts.connects.Load(),
		LinkDialFailures:  b.counts.dialFailures.Load(),
		LinkDrops:         b.counts.drops.Load(),
		RejectedPeers:     b.counts.rejected.Load(),
		FrameAuthFailures: b.counts.frameAuth.Load(),
		RetainedBytes:     b.retainedBytes.Load(),
		Evictions:         b.counts.evictions.Load(),
	}
	b.chMu.RLock()
	states := slices.Collect(maps.Values(b.chans))
	b.chMu.RUnlock()
	for _, s := range states {
		select {
		case s.lk <- struct{}{}:
		default:
			st.Busy++
			continue
		}
		switch {
		case s.owned:
			st.Owned++
			st.Unconfirmed += len(s.pend)
		case s.has:
			st.Replicas++
		}
		st.Retained += s.hist.len()
		s.unlock()
	}
	return st
}
