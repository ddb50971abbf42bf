package mesh

import (
	"cmp"
	"context"
	"slices"

	"github.com/meshchat/meshchat/transport"
)

// The history budget (Config.HistoryBudget): the bytes of history that
// the channels this node orders or backs up retain in memory, all of them
// together. Every change to a channel's ring is added to one total
// (account); once the total is over the budget, the eviction goroutine
// empties the rings of the channels used least recently until it is
// under seven eighths of it. Without a Log an evicted channel's history
// is gone, its epoch and offset stay: a resume from before them is not
// recovered, and one order goes on. With a Log the channel turns cold:
// its history stays on disk, new publications go only there, and the
// next read loads it back (warm), so memory is a cache of the log.
// Pinned channels (the node's own tables) are never evicted.

// keep adds pub, just made readable, to s's retained history; s is
// locked. A cold channel's history is the log's: pub is there already.
func (b *Broker) keep(s *chanState, pub transport.Publication) {
	if !s.cold {
		s.hist.push(pub)
	}
}

// account brings the broker's total up to date with s's ring, marks s
// used, and wakes the eviction when the total is over the budget; s is
// locked.
func (b *Broker) account(s *chanState) {
	b.settle(s)
	b.touch(s)
	if b.cfg.HistoryBudget > 0 && b.retainedBytes.Load() > b.cfg.HistoryBudget {
		select {
		case b.evictKick <- struct{}{}:
		default:
		}
	}
}

// settle adds the change of s's ring since the last call to the total;
// s is locked.
func (b *Broker) settle(s *chanState) {
	if d := s.hist.bytes - s.counted; d != 0 {
		s.counted = s.hist.bytes
		b.retainedBytes.Add(d)
	}
}

func (b *Broker) touch(s *chanState) { s.used.Store(b.useClock.Add(1)) }

// retained returns s's retained history from minTime on (Unix ms), read
// back from the log first when it was evicted; s is locked. A log that
// cannot be read leaves what memory has, logged: nothing, for a resume
// that is then not recovered.
func (b *Broker) retained(s *chanState, minTime int64) []transport.Publication {
	h := b.warmed(s)
	n := h.kept(minTime)
	return h.slice(h.len()-n, n)
}

// warmed returns s's history ring, read back from the log first when it
// was evicted (see retained); s is locked.
func (b *Broker) warmed(s *chanState) *ring {
	b.touch(s)
	if s.cold {
		if err := b.warm(s); err != nil {
			b.log.Error("reading evicted history back from the log", "channel", s.name, "err", err)
		}
	}
	return &s.hist
}

// warm loads an evicted channel's history back from the log; s is
// locked. The log may also hold the owner's publications in flight, past
// the confirmed offset: those are not readable yet.
func (b *Broker) warm(s *chanState) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.RequestTimeout)
	defer cancel()
	st, err := b.cfg.Log.Load(ctx, s.name)
	if err != nil {
		return err
	}
	s.hist.reset()
	for _, p := range st.Pubs {
		if p.Epoch == s.epoch && p.Offset <= s.offset {
			s.hist.push(p)
		}
	}
	s.cold = false
	b.account(s)
	return nil
}

// evictLoop runs evict whenever account finds the total over budget.
func (b *Broker) evictLoop() {
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.evictKick:
			b.evict()
		}
	}
}

// evict empties the rings of the least recently used channels until the
// total is under seven eighths of the budget. A channel busy at the
// moment (a takeover holds it) is passed over, as Stats does.
func (b *Broker) evict() {
	low := b.cfg.HistoryBudget - b.cfg.HistoryBudget/8
	type cand struct {
		s    *chanState
		used uint64
	}
	b.chMu.RLock()
	cands := make([]cand, 0, len(b.chans))
	for name, s := range b.chans {
		if b.cfg.Pinned == nil || !b.cfg.Pinned(name) {
			cands = append(cands, cand{s, s.used.Load()})
		}
	}
	b.chMu.RUnlock()
	slices.SortFunc(cands, func(x, y cand) int { return cmp.Compare(x.used, y.used) })
	for _, c := range cands {
		if b.retainedBytes.Load() <= low {
			return
		}
		s := c.s
		select {
		case s.lk <- struct{}{}:
		default:
			continue
		}
		if s.hist.len() > 0 {
			s.hist.reset()
			s.cold = b.cfg.Log != nil
			b.settle(s)
			b.counts.evictions.Add(1)
		}
		s.unlock()
	}
}
