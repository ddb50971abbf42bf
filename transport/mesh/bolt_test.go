package mesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

func openTestBolt(t testing.TB, path string, opts BoltOptions) *Bolt {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "history.db")
	}
	b, err := OpenBolt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func pubAt(epoch string, off uint64, at int64) transport.Publication {
	return transport.Publication{Offset: off, Epoch: epoch, Time: at, Data: []byte("m" + strconv.FormatUint(off, 10))}
}

// appendN starts ch in epoch and appends offsets 1..n, keyed "k<offset>".
func appendN(t testing.TB, b *Bolt, ch, epoch string, n int, at func(off uint64) int64) []transport.Publication {
	t.Helper()
	ctx := context.Background()
	if err := b.Reset(ctx, ch, LogState{Epoch: epoch, LastTime: at(0)}); err != nil {
		t.Fatal(err)
	}
	var pubs []transport.Publication
	for off := uint64(1); off <= uint64(n); off++ {
		p := pubAt(epoch, off, at(off))
		if err := b.Append(ctx, ch, p, "k"+strconv.FormatUint(off, 10)); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	return pubs
}

func keysOf(keys []LogKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Key
	}
	return out
}

// stored counts the records really on disk for ch (retention must delete,
// not just hide).
func stored(t testing.TB, b *Bolt, ch string) (pubs, keys int) {
	t.Helper()
	err := b.db.View(func(tx *bbolt.Tx) error {
		cb := tx.Bucket(bktChans).Bucket([]byte(ch))
		pubs = cb.Bucket(bktPubs).Stats().KeyN
		keys = cb.Bucket(bktKeys).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pubs, keys
}

func TestBoltAppendLoad(t *testing.T) {
	b := openTestBolt(t, "", BoltOptions{})
	ctx := t.Context()
	now := time.Now().UnixMilli()
	want := appendN(t, b, "r:a", "e1", 5, func(uint64) int64 { return now })
	st, err := b.Load(ctx, "r:a")
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != "e1" || st.Offset != 5 || st.LastTime != now {
		t.Fatalf("head = %q/%d/%d, want e1/5/%d", st.Epoch, st.Offset, st.LastTime, now)
	}
	if !slices.EqualFunc(st.Pubs, want, sameRecord) {
		t.Fatalf("pubs = %+v, want %+v", st.Pubs, want)
	}
	if got := keysOf(st.Keys); !slices.Equal(got, []string{"k1", "k2", "k3", "k4", "k5"}) || !sameRecord(st.Keys[2].Pub, want[2]) {
		t.Fatalf("keys = %v (%+v)", got, st.Keys)
	}
	empty, err := b.Load(ctx, "r:none")
	if err != nil || empty.Epoch != "" {
		t.Fatalf("load of an unknown channel: %+v, %v", empty, err)
	}
	// An empty payload comes back empty, not nil (the wire format keeps
	// that difference away from the hub).
	if err := b.Append(ctx, "r:a", transport.Publication{Offset: 6, Epoch: "e1", Time: now, Data: []byte{}}, ""); err != nil {
		t.Fatal(err)
	}
	st, _ = b.Load(ctx, "r:a")
	if p := st.Pubs[len(st.Pubs)-1]; p.Offset != 6 || p.Data == nil || len(p.Data) != 0 {
		t.Fatalf("empty payload loaded as %+v", p)
	}
}

// sameRecord compares publications as the log stores them, time included.
func sameRecord(a, b transport.Publication) bool {
	return a.Offset == b.Offset && a.Epoch == b.Epoch && a.Time == b.Time && string(a.Data) == string(b.Data)
}

func TestBoltAppendChecksEpoch(t *testing.T) {
	b := openTestBolt(t, "", BoltOptions{})
	ctx := t.Context()
	if err := b.Append(ctx, "r:a", pubAt("e1", 1, 1), ""); !errors.Is(err, ErrLogEpoch) {
		t.Fatalf("append without a stream: %v, want ErrLogEpoch", err)
	}
	appendN(t, b, "r:a", "e1", 1, func(uint64) int64 { return time.Now().UnixMilli() })
	if err := b.Append(ctx, "r:a", pubAt("e2", 2, 1), ""); !errors.Is(err, ErrLogEpoch) {
		t.Fatalf("append in another epoch: %v, want ErrLogEpoch", err)
	}
	// Reset starts the new epoch and drops the old stream.
	if err := b.Reset(ctx, "r:a", LogState{Epoch: "e2", LastTime: 1}); err != nil {
		t.Fatal(err)
	}
	st, err := b.Load(ctx, "r:a")
	if err != nil || st.Epoch != "e2" || st.Offset != 0 || len(st.Pubs) != 0 || len(st.Keys) != 0 {
		t.Fatalf("after reset: %+v, %v", st, err)
	}
	if err := b.Reset(ctx, "r:a", LogState{}); err == nil {
		t.Fatal("reset without an epoch succeeded")
	}
}

func TestBoltRetention(t *testing.T) {
	now := time.Now().UnixMilli()
	hour := time.Hour.Milliseconds()
	tests := []struct {
		name     string
		opts     BoltOptions
		n        int
		at       func(off uint64) int64
		wantPubs []uint64
		wantKeys []string
	}{
		{
			name:     "count",
			opts:     BoltOptions{HistorySize: 3},
			n:        10,
			at:       func(off uint64) int64 { return now - 100 + int64(off) }, // keys come back oldest first
			wantPubs: []uint64{8, 9, 10},
			wantKeys: []string{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"},
		},
		{
			name: "age",
			opts: BoltOptions{HistoryMaxAge: time.Hour, DedupeWindow: 24 * time.Hour},
			n:    6,
			at: func(off uint64) int64 {
				if off <= 4 {
					return now - 2*hour
				}
				return now
			},
			wantPubs: []uint64{5, 6},
			wantKeys: []string{"k1", "k2", "k3", "k4", "k5", "k6"},
		},
		{
			name: "idempotency window",
			opts: BoltOptions{DedupeWindow: time.Minute},
			n:    4,
			at: func(off uint64) int64 {
				if off <= 2 {
					return now - hour
				}
				return now
			},
			wantPubs: []uint64{1, 2, 3, 4},
			wantKeys: []string{"k3", "k4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.db")
			b, err := OpenBolt(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, b, "r:a", "e1", tt.n, tt.at)
			check := func(b *Bolt) {
				t.Helper()
				st, err := b.Load(t.Context(), "r:a")
				if err != nil {
					t.Fatal(err)
				}
				if got := brokertest.Offsets(st.Pubs); !slices.Equal(got, tt.wantPubs) || st.Offset != uint64(tt.n) {
					t.Fatalf("pubs %v (offset %d), want %v (offset %d)", got, st.Offset, tt.wantPubs, tt.n)
				}
				if got := keysOf(st.Keys); !slices.Equal(got, tt.wantKeys) {
					t.Fatalf("keys %v, want %v", got, tt.wantKeys)
				}
				if p, k := stored(t, b, "r:a"); p != len(tt.wantPubs) || k != len(tt.wantKeys) {
					t.Fatalf("on disk: %d pubs, %d keys; want %d, %d", p, k, len(tt.wantPubs), len(tt.wantKeys))
				}
			}
			check(b)
			// Retention holds across a reopen.
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = openTestBolt(t, path, tt.opts)
			check(b)
		})
	}
}

// TestBoltTrimIdleChannel: an idle channel's old publications leave the
// disk on Trim (and on open), not only when the channel is written again.
func TestBoltTrimIdleChannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	b := openTestBolt(t, path, BoltOptions{})
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	appendN(t, b, "r:idle", "e1", 3, func(uint64) int64 { return old })
	if p, k := stored(t, b, "r:idle"); p != 3 || k != 0 {
		// Keys older than the default window are trimmed at once.
		t.Fatalf("before trim: %d pubs, %d keys", p, k)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTestBolt(t, path, BoltOptions{HistoryMaxAge: time.Hour})
	if p, _ := stored(t, b, "r:idle"); p != 0 {
		t.Fatalf("after reopening with a 1h age limit: %d pubs on disk", p)
	}
	st, err := b.Load(t.Context(), "r:idle")
	if err != nil || st.Epoch != "e1" || st.Offset != 3 {
		t.Fatalf("the stream's position must outlive its publications: %+v, %v", st, err)
	}
	if err := b.Trim(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestBoltResetAppliesRetention(t *testing.T) {
	b := openTestBolt(t, "", BoltOptions{HistorySize: 2, DedupeWindow: time.Minute})
	now := time.Now().UnixMilli()
	st := LogState{Epoch: "e9", Offset: 4, LastTime: now}
	for off := uint64(1); off <= 4; off++ {
		st.Pubs = append(st.Pubs, pubAt("e9", off, now))
	}
	st.Keys = []LogKey{{Key: "old", Pub: pubAt("e9", 1, now-time.Hour.Milliseconds())}, {Key: "new", Pub: st.Pubs[3]}}
	if err := b.Reset(t.Context(), "r:a", st); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(t.Context(), "r:a")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(brokertest.Offsets(got.Pubs), []uint64{3, 4}) || !slices.Equal(keysOf(got.Keys), []string{"new"}) || got.Offset != 4 {
		t.Fatalf("after reset: %+v", got)
	}
}

func TestBoltReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "history.db") // the directory is created
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	want := map[string][]transport.Publication{}
	for i, ch := range []string{"r:a", "r:b", "u:carol"} {
		want[ch] = appendN(t, b, ch, "ep"+ch, i+2, func(uint64) int64 { return now })
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := b.Append(context.Background(), "r:a", pubAt("epr:a", 9, now), ""); !errors.Is(err, ErrLogClosed) {
		t.Fatalf("append after close: %v, want ErrLogClosed", err)
	}
	if _, err := b.Load(context.Background(), "r:a"); !errors.Is(err, ErrLogClosed) {
		t.Fatalf("load after close: %v, want ErrLogClosed", err)
	}

	b = openTestBolt(t, path, BoltOptions{})
	chans, err := b.Channels(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(chans, []string{"r:a", "r:b", "u:carol"}) {
		t.Fatalf("channels %v", chans)
	}
	for ch, pubs := range want {
		st, err := b.Load(t.Context(), ch)
		if err != nil {
			t.Fatal(err)
		}
		if st.Epoch != "ep"+ch || st.Offset != uint64(len(pubs)) || !slices.EqualFunc(st.Pubs, pubs, sameRecord) {
			t.Fatalf("%s after reopen: %+v", ch, st)
		}
	}
}

func TestBoltRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	future := filepath.Join(dir, "future.db")
	fb := openTestBolt(t, future, BoltOptions{})
	if err := fb.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bktMeta).Put(keyVer, []byte{99}) }); err != nil {
		t.Fatal(err)
	}
	fb.Close()
	page := make([]byte, 4096)
	for i := range page {
		page[i] = byte(i * 7)
	}

	tests := []struct {
		name string
		path string
		want error
	}{
		{"text file", write("notes.txt", []byte("these are not the bytes you are looking for\n")), ErrNotLog},
		{"garbage pages", write("garbage.db", slices.Repeat(page, 4)), ErrNotLog},
		{"another program's bbolt file", foreign, ErrNotLog},
		{"newer layout", future, ErrNotLog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := OpenBolt(tt.path, BoltOptions{LockTimeout: 100 * time.Millisecond})
			if !errors.Is(err, tt.want) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("open: %v, want %v", err, tt.want)
			}
			t.Logf("%v", err)
		})
	}

	t.Run("in use", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "h.db")
		openTestBolt(t, path, BoltOptions{})
		b, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrLogLocked) {
			if b != nil {
				b.Close()
			}
			t.Fatalf("second open: %v, want ErrLogLocked", err)
		}
	})
}

func TestBoltOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	for _, opts := range []BoltOptions{{HistorySize: -1}, {HistoryMaxAge: -1}, {DedupeWindow: -1}, {MaxBatch: -1}, {LockTimeout: -1}} {
		if b, err := OpenBolt(filepath.Join(dir, "h.db"), opts); err == nil {
			b.Close()
			t.Errorf("OpenBolt accepted %+v", opts)
		}
	}
	if _, err := OpenBolt("", BoltOptions{}); err == nil {
		t.Error("OpenBolt accepted an empty path")
	}
}

// TestBoltBatchIsolatesFailures runs a batch in which one write fails: the
// others commit, and only the failing one reports an error.
func TestBoltBatchIsolatesFailures(t *testing.T) {
	b := openTestBolt(t, "", BoltOptions{})
	appendN(t, b, "r:a", "e1", 0, func(uint64) int64 { return time.Now().UnixMilli() })
	mk := func(fn func(tx *bbolt.Tx, now int64) error) *boltOp {
		return &boltOp{fn: fn, done: make(chan error, 1)}
	}
	put := func(k string) func(tx *bbolt.Tx, now int64) error {
		return func(tx *bbolt.Tx, now int64) error {
			return tx.Bucket(bktMeta).Put([]byte(k), []byte("v"))
		}
	}
	boom := errors.New("boom")
	ops := []*boltOp{
		mk(put("x1")),
		mk(func(tx *bbolt.Tx, now int64) error {
			_ = tx.Bucket(bktMeta).Put([]byte("half"), []byte("v")) // rolled back
			return boom
		}),
		mk(put("x2")),
	}
	before := b.Stats()
	b.commit(slices.Clone(ops))
	for i, op := range ops {
		err := <-op.done
		if (i == 1) != errors.Is(err, boom) || (i != 1 && err != nil) {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	err := b.db.View(func(tx *bbolt.Tx) error {
		m := tx.Bucket(bktMeta)
		if m.Get([]byte("x1")) == nil || m.Get([]byte("x2")) == nil || m.Get([]byte("half")) != nil {
			return fmt.Errorf("x1=%q x2=%q half=%q", m.Get([]byte("x1")), m.Get([]byte("x2")), m.Get([]byte("half")))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Commits-before.Commits != 1 || s.Writes-before.Writes != 2 {
		t.Fatalf("stats %+v -> %+v, want one commit of two writes", before, s)
	}
}

// TestBoltConcurrentAppends appends to many channels at once: every
// append lands, in order per channel.
func TestBoltConcurrentAppends(t *testing.T) {
	b := openTestBolt(t, "", BoltOptions{})
	const chans, per = 8, 25
	now := time.Now().UnixMilli()
	for c := range chans {
		appendN(t, b, "r:c"+strconv.Itoa(c), "e", 0, func(uint64) int64 { return now })
	}
	var wg sync.WaitGroup
	for c := range chans {
		wg.Go(func() {
			for off := uint64(1); off <= per; off++ {
				if err := b.Append(t.Context(), "r:c"+strconv.Itoa(c), pubAt("e", off, now), ""); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for c := range chans {
		st, err := b.Load(t.Context(), "r:c"+strconv.Itoa(c))
		if err != nil || st.Offset != per || len(st.Pubs) != per {
			t.Fatalf("r:c%d: offset %d, %d pubs, %v", c, st.Offset, len(st.Pubs), err)
		}
	}
	s := b.Stats()
	t.Logf("%d writes in %d commits", s.Writes, s.Commits)
}

// BenchmarkBoltAppend measures one durable append (fsync included): alone,
// and from concurrent writers on distinct channels, where group commit
// shares each fsync among the writes queued during the previous one.
func BenchmarkBoltAppend(b *testing.B) {
	data := []byte(`{"type":"message","room":"bench","from":"alice","text":"hello, world"}`)
	for _, writers := range []int{1, 16, 64} {
		b.Run("writers="+strconv.Itoa(writers), func(b *testing.B) {
			log := openTestBolt(b, "", BoltOptions{})
			ctx := context.Background()
			for w := range writers {
				if err := log.Reset(ctx, "r:w"+strconv.Itoa(w), LogState{Epoch: "e"}); err != nil {
					b.Fatal(err)
				}
			}
			start := log.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				n := b.N / writers
				if w < b.N%writers {
					n++
				}
				ch := "r:w" + strconv.Itoa(w)
				wg.Go(func() {
					for off := uint64(1); off <= uint64(n); off++ {
						p := transport.Publication{Offset: off, Epoch: "e", Time: time.Now().UnixMilli(), Data: data}
						if err := log.Append(ctx, ch, p, "key"); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			s := log.Stats()
			if c := s.Commits - start.Commits; c > 0 {
				b.ReportMetric(float64(s.Writes-start.Writes)/float64(c), "writes/commit")
			}
		})
	}
}
