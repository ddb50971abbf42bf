package bench

import (
	"math/bits"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 60 s at 3 significant digits.
const (
	histLowest  = 1
	histHighest = 60_000_000
	histDigits  = 3
	// latencyShards spreads recording over this many mutexes: one
	// histogram per connection would cost tens of MB at 3000 clients.
	latencyShards = 16
)

// lockedHist is an HDR histogram behind a mutex.
type lockedHist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards on separate cache lines
}

func newLockedHist() *lockedHist {
	return &lockedHist{h: hdrhistogram.New(histLowest, histHighest, histDigits)}
}

func (l *lockedHist) record(us int64) {
	us = min(max(us, histLowest), histHighest)
	l.mu.Lock()
	_ = l.h.RecordValue(us) // cannot fail: clamped to the range
	l.mu.Unlock()
}

// shardedHist is latencyShards lockedHists merged on read.
type shardedHist struct {
	shards [latencyShards]*lockedHist
}

func newShardedHist() *shardedHist {
	s := &shardedHist{}
	for i := range s.shards {
		s.shards[i] = newLockedHist()
	}
	return s
}

func (s *shardedHist) shard(i int) *lockedHist { return s.shards[i%latencyShards] }

// merged returns one histogram holding every shard's values.
func (s *shardedHist) merged() *hdrhistogram.Histogram {
	out := hdrhistogram.New(histLowest, histHighest, histDigits)
	for _, sh := range s.shards {
		sh.mu.Lock()
		out.Merge(sh.h)
		sh.mu.Unlock()
	}
	return out
}

// Percentiles summarises a histogram in microseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P95   int64   `json:"p95"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
}

func summarize(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		Mean:  h.Mean(),
		P50:   h.ValueAtQuantile(50),
		P95:   h.ValueAtQuantile(95),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}

// bitset records which sequence numbers were seen.
type bitset []uint64

// set marks i and reports whether it was already marked.
func (b *bitset) set(i int64) (was bool) {
	w := int(i >> 6)
	if w >= len(*b) {
		n := max(w+1, 2*len(*b))
		nb := make(bitset, n)
		copy(nb, *b)
		*b = nb
	}
	m := uint64(1) << (uint(i) & 63)
	was = (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

// missing counts bits set in want and not in have.
func missing(want, have bitset) int64 {
	var n int
	for i, w := range want {
		if i < len(have) {
			w &^= have[i]
		}
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// missingBelow counts bits below limit set in want and not in have.
func missingBelow(want, have bitset, limit int64) int64 {
	var n int
	for i, w := range want {
		lo := int64(i) * 64
		if lo >= limit {
			break
		}
		if i < len(have) {
			w &^= have[i]
		}
		if limit-lo < 64 {
			w &= uint64(1)<<uint(limit-lo) - 1
		}
		n += bits.OnesCount64(w)
	}
	return int64(n)
}
