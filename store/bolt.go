package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/meshchat/meshchat/transport"
)

// Defaults for BoltOptions.
const (
	DefaultBoltMaxBatch    = 1024
	DefaultBoltLockTimeout = time.Second
)

// logFormat marks a file as a meshchat history log; logVersion is the
// layout below. A later layout bumps the version and converts on open.
const (
	logFormat  = "meshchat-history-log"
	logVersion = 1
)

// File layout (bbolt buckets):
//
//	meta/format   logFormat
//	meta/version  logVersion (one byte)
//	chans/<channel>/head   offset:uvarint lastTime:varint epoch:rest
//	chans/<channel>/pubs/  offset:u64be -> time:varint data:rest
//	chans/<channel>/keys/  time:u64be key:rest -> offset:uvarint data:rest
//
// Big-endian keys make bbolt's byte order the stream order (pubs) and the
// expiry order (keys), so retention only ever deletes from the front.
var (
	bktMeta  = []byte("meta")
	bktChans = []byte("chans")
	bktPubs  = []byte("pubs")
	bktKeys  = []byte("keys")
	keyHead  = []byte("head")
	keyFmt   = []byte("format")
	keyVer   = []byte("version")
)

// BoltOptions configure a Bolt log. Zero values mean the documented
// defaults. Give the retention fields the broker's values.
type BoltOptions struct {
	// HistorySize is how many publications a channel keeps on disk. Zero
	// means transport.DefaultHistorySize.
	HistorySize int
	// HistoryMaxAge drops publications older than this. Zero means no age
	// limit.
	HistoryMaxAge time.Duration
	// DedupeWindow is how long idempotency keys are kept. Zero means
	// transport.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// MaxBatch caps how many writes share one transaction (one fsync).
	// Zero means DefaultBoltMaxBatch.
	MaxBatch int
	// LockTimeout is how long OpenBolt waits for another process to
	// release the file. Zero means DefaultBoltLockTimeout.
	LockTimeout time.Duration
}

// Bolt is a transport.Log in one bbolt file. Writes from concurrent
// callers are group-committed: one goroutine takes every write queued while
// the previous transaction was syncing and commits them in one
// transaction, so N concurrent appends cost one fsync, and a lone append
// waits for no timer. Reads are bbolt read transactions and run in
// parallel with the writer.
type Bolt struct {
	db   *bbolt.DB
	opts BoltOptions

	ops  chan *boltOp // unbuffered: a queued write is one the writer took
	quit chan struct{}
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	commits atomic.Uint64
	writes  atomic.Uint64
}

var _ transport.Log = (*Bolt)(nil)

type boltOp struct {
	fn   func(tx *bbolt.Tx, now int64) error
	done chan error // buffered: the writer never waits for the caller
}

// BoltStats counts the log's write work since it was opened.
type BoltStats struct {
	Commits uint64 // transactions committed (each one fsync)
	Writes  uint64 // writes they carried
}

// OpenBolt opens or creates the log at path (its directory is created).
// A file that is not a meshchat history log fails with ErrNotLog; one that
// another process holds fails with ErrLogLocked. Retention is applied to
// the whole file on open.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	switch {
	case path == "":
		return nil, errors.New("store: history log: empty path")
	case opts.MaxBatch < 0 || opts.LockTimeout < 0:
		return nil, errors.New("store: history log: negative size or duration in BoltOptions")
	}
	if err := transport.FillRetention("store: history log", &opts.HistorySize, &opts.HistoryMaxAge, &opts.DedupeWindow); err != nil {
		return nil, err
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = DefaultBoltMaxBatch
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultBoltLockTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: history log: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is rebuilt by a scan on open instead of being
		// written on every commit: cheaper appends, as etcd runs it.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLogLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %w", ErrNotLog, path, err)
	case err != nil:
		return nil, fmt.Errorf("store: history log %s: %w", path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return initLog(tx, path) }); err != nil {
		db.Close()
		return nil, err
	}
	b := &Bolt{db: db, opts: opts, ops: make(chan *boltOp), quit: make(chan struct{})}
	if err := db.Update(func(tx *bbolt.Tx) error { return b.trimAll(tx, time.Now().UnixMilli()) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: history log %s: trim: %w", path, err)
	}
	b.wg.Add(1)
	go b.writeLoop()
	return b, nil
}

// initLog stamps a new file and checks an existing one.
func initLog(tx *bbolt.Tx, path string) error {
	meta := tx.Bucket(bktMeta)
	if meta == nil {
		foreign := false
		_ = tx.ForEach(func([]byte, *bbolt.Bucket) error { foreign = true; return nil })
		if foreign {
			return fmt.Errorf("%w: %s: a bbolt file of another program", ErrNotLog, path)
		}
		meta, err := tx.CreateBucket(bktMeta)
		if err == nil {
			err = meta.Put(keyFmt, []byte(logFormat))
		}
		if err == nil {
			err = meta.Put(keyVer, []byte{logVersion})
		}
		if err == nil {
			_, err = tx.CreateBucket(bktChans)
		}
		if err != nil {
			return fmt.Errorf("store: history log %s: create: %w", path, err)
		}
		return nil
	}
	if !bytes.Equal(meta.Get(keyFmt), []byte(logFormat)) || tx.Bucket(bktChans) == nil {
		return fmt.Errorf("%w: %s: a bbolt file of another program", ErrNotLog, path)
	}
	if v := meta.Get(keyVer); len(v) != 1 || v[0] != logVersion {
		return fmt.Errorf("%w: %s: unsupported layout version %v (this build reads %d)", ErrNotLog, path, v, logVersion)
	}
	return nil
}

// Stats returns the log's write counters.
func (b *Bolt) Stats() BoltStats {
	return BoltStats{Commits: b.commits.Load(), Writes: b.writes.Load()}
}

// Close waits for the writes in progress, then closes the file. Safe to
// call twice.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		close(b.quit)
		b.wg.Wait()
		b.closeErr = b.db.Close()
	})
	return b.closeErr
}

// write hands fn to the writer and waits until it is committed.
func (b *Bolt) write(ctx context.Context, fn func(tx *bbolt.Tx, now int64) error) error {
	op := &boltOp{fn: fn, done: make(chan error, 1)}
	select {
	case b.ops <- op:
	case <-b.quit:
		return ErrLogClosed
	case <-ctx.Done():
		return fmt.Errorf("store: history log write: %w", ctx.Err())
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		// Taken by the writer: it may still commit.
		return fmt.Errorf("store: history log write: %w", ctx.Err())
	}
}

func (b *Bolt) writeLoop() {
	defer b.wg.Done()
	batch := make([]*boltOp, 0, b.opts.MaxBatch)
	for {
		select {
		case op := <-b.ops:
			batch = append(batch[:0], op)
		case <-b.quit:
			return
		}
		// Everyone who queued while the last commit synced joins this one.
	more:
		for len(batch) < b.opts.MaxBatch {
			select {
			case op := <-b.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		b.commit(batch)
		clear(batch)
	}
}

// commit runs batch in one transaction. A write that fails rolls the
// transaction back; it gets its error and the others are committed
// without it, so one bad write never fails its neighbours.
func (b *Bolt) commit(batch []*boltOp) {
	for len(batch) > 0 {
		failed := -1
		err := b.db.Update(func(tx *bbolt.Tx) error {
			now := time.Now().UnixMilli()
			for i, op := range batch {
				if err := op.fn(tx, now); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			if err == nil {
				b.commits.Add(1)
				b.writes.Add(uint64(len(batch)))
			} else {
				err = fmt.Errorf("store: history log commit: %w", err)
			}
			for _, op := range batch {
				op.done <- err
			}
			return
		}
		batch[failed].done <- err
		batch = slices.Delete(batch, failed, failed+1)
	}
}

func checkChannel(ch string) error {
	if ch == "" || len(ch) > 1024 {
		return fmt.Errorf("store: history log: bad channel name length %d", len(ch))
	}
	return nil
}

// Append implements transport.Log. The count, age and idempotency
// retention of the channel is applied in the same transaction.
func (b *Bolt) Append(ctx context.Context, ch string, pub transport.Publication, key string) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if len(key) > 4096 {
		return fmt.Errorf("store: history log: idempotency key of %d bytes", len(key))
	}
	var okey [8]byte
	binary.BigEndian.PutUint64(okey[:], pub.Offset)
	val := binary.AppendVarint(make([]byte, 0, binary.MaxVarintLen64+len(pub.Data)), pub.Time)
	val = append(val, pub.Data...)
	return b.write(ctx, func(tx *bbolt.Tx, now int64) error {
		cb := tx.Bucket(bktChans).Bucket([]byte(ch))
		if cb == nil {
			return fmt.Errorf("%w: %s has no stream", ErrLogEpoch, ch)
		}
		h, err := decodeHead(cb.Get(keyHead))
		if err != nil {
			return fmt.Errorf("store: history log %s: %w", ch, err)
		}
		if h.epoch != pub.Epoch {
			return fmt.Errorf("%w: %s is in epoch %q, not %q", ErrLogEpoch, ch, h.epoch, pub.Epoch)
		}
		pubs, keys := cb.Bucket(bktPubs), cb.Bucket(bktKeys)
		if err := pubs.Put(okey[:], val); err != nil {
			return err
		}
		if key != "" {
			if err := keys.Put(dedupeKey(pub.Time, key), dedupeVal(pub)); err != nil {
				return err
			}
		}
		h.offset, h.lastTime = max(h.offset, pub.Offset), pub.Time
		if err := cb.Put(keyHead, h.encode()); err != nil {
			return err
		}
		return b.trim(cb, h.offset, now)
	})
}

// Reset implements transport.Log.
func (b *Bolt) Reset(ctx context.Context, ch string, st transport.LogState) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if st.Epoch == "" {
		return errors.New("store: history log: Reset without an epoch")
	}
	return b.write(ctx, func(tx *bbolt.Tx, now int64) error {
		chans := tx.Bucket(bktChans)
		if chans.Bucket([]byte(ch)) != nil {
			if err := chans.DeleteBucket([]byte(ch)); err != nil {
				return err
			}
		}
		cb, err := chans.CreateBucket([]byte(ch))
		if err != nil {
			return err
		}
		pubs, err := cb.CreateBucket(bktPubs)
		if err != nil {
			return err
		}
		keys, err := cb.CreateBucket(bktKeys)
		if err != nil {
			return err
		}
		h := head{offset: st.Offset, lastTime: st.LastTime, epoch: st.Epoch}
		if err := cb.Put(keyHead, h.encode()); err != nil {
			return err
		}
		// Only what retention keeps is written.
		for _, p := range st.Pubs[max(0, len(st.Pubs)-b.opts.HistorySize):] {
			if p.Time < b.minTime(now) {
				continue
			}
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], p.Offset)
			if err := pubs.Put(k[:], append(binary.AppendVarint(nil, p.Time), p.Data...)); err != nil {
				return err
			}
		}
		for _, k := range st.Keys {
			if k.Pub.Time < now-b.opts.DedupeWindow.Milliseconds() {
				continue
			}
			if err := keys.Put(dedupeKey(k.Pub.Time, k.Key), dedupeVal(k.Pub)); err != nil {
				return err
			}
		}
		return b.trim(cb, h.offset, now)
	})
}

// Load implements transport.Log.
func (b *Bolt) Load(ctx context.Context, ch string) (transport.LogState, error) {
	var st transport.LogState
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if b.closed() {
		return st, ErrLogClosed
	}
	err := b.db.View(func(tx *bbolt.Tx) error {
		cb := tx.Bucket(bktChans).Bucket([]byte(ch))
		if cb == nil {
			return nil
		}
		h, err := decodeHead(cb.Get(keyHead))
		if err != nil {
			return err
		}
		st = transport.LogState{Epoch: h.epoch, Offset: h.offset, LastTime: h.lastTime}
		now := time.Now().UnixMilli()
		minTime, first := b.minTime(now), h.offset-min(h.offset, uint64(b.opts.HistorySize))
		c := cb.Bucket(bktPubs).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			p, err := decodePub(k, v, h.epoch)
			if err != nil {
				return err
			}
			if p.Offset > first && p.Time >= minTime {
				st.Pubs = append(st.Pubs, p)
			}
		}
		keyMin := now - b.opts.DedupeWindow.Milliseconds()
		c = cb.Bucket(bktKeys).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			lk, err := decodeDedupe(k, v, h.epoch)
			if err != nil {
				return err
			}
			if lk.Pub.Time >= keyMin {
				st.Keys = append(st.Keys, lk)
			}
		}
		return nil
	})
	if err != nil {
		return transport.LogState{}, fmt.Errorf("store: history log load %s: %w", ch, err)
	}
	return st, nil
}

// Channels implements transport.Log.
func (b *Bolt) Channels(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.closed() {
		return nil, ErrLogClosed
	}
	var out []string
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bktChans).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: history log channels: %w", err)
	}
	return out, nil
}

// Trim applies retention to every channel, so that publications of idle
// channels do not outstay HistoryMaxAge on disk. OpenBolt runs it; a
// caller may also run it periodically.
func (b *Bolt) Trim(ctx context.Context) error {
	return b.write(ctx, b.trimAll)
}

func (b *Bolt) trimAll(tx *bbolt.Tx, now int64) error {
	chans := tx.Bucket(bktChans)
	var names [][]byte
	_ = chans.ForEachBucket(func(k []byte) error { names = append(names, slices.Clone(k)); return nil })
	for _, n := range names {
		cb := chans.Bucket(n)
		h, err := decodeHead(cb.Get(keyHead))
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := b.trim(cb, h.offset, now); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bolt) minTime(now int64) int64 {
	if b.opts.HistoryMaxAge <= 0 {
		return 0
	}
	return now - b.opts.HistoryMaxAge.Milliseconds()
}

// trim deletes, from the front, the publications beyond HistorySize or
// older than HistoryMaxAge, and the expired idempotency keys.
func (b *Bolt) trim(cb *bbolt.Bucket, last uint64, now int64) error {
	first := last - min(last, uint64(b.opts.HistorySize)) // highest offset to drop by count
	minTime := b.minTime(now)
	c := cb.Bucket(bktPubs).Cursor()
	// Seek again after each delete: bbolt's cursor may skip an item
	// when Next follows a Delete.
	for k, v := c.First(); k != nil; k, v = c.First() {
		t, n := binary.Varint(v)
		if n <= 0 {
			return errors.New("corrupt publication record")
		}
		if binary.BigEndian.Uint64(k) > first && t >= minTime {
			break
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	keyMin := now - b.opts.DedupeWindow.Milliseconds()
	c = cb.Bucket(bktKeys).Cursor()
	for k, _ := c.First(); k != nil && int64(binary.BigEndian.Uint64(k)) < keyMin; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bolt) closed() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

type head struct {
	offset   uint64
	lastTime int64
	epoch    string
}

func (h head) encode() []byte {
	e := binary.AppendUvarint(make([]byte, 0, 2*binary.MaxVarintLen64+len(h.epoch)), h.offset)
	e = binary.AppendVarint(e, h.lastTime)
	return append(e, h.epoch...)
}

func decodeHead(v []byte) (head, error) {
	off, n := binary.Uvarint(v)
	if n <= 0 {
		return head{}, errors.New("corrupt channel head")
	}
	t, m := binary.Varint(v[n:])
	if m <= 0 {
		return head{}, errors.New("corrupt channel head")
	}
	return head{offset: off, lastTime: t, epoch: string(v[n+m:])}, nil
}

func decodePub(k, v []byte, epoch string) (transport.Publication, error) {
	t, n := binary.Varint(v)
	if len(k) != 8 || n <= 0 {
		return transport.Publication{}, errors.New("corrupt publication record")
	}
	// Copied: bbolt's memory is only valid inside the transaction.
	return transport.Publication{Offset: binary.BigEndian.Uint64(k), Epoch: epoch, Time: t, Data: bytes.Clone(v[n:])}, nil
}

func dedupeKey(at int64, key string) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), uint64(at)), key...)
}

func dedupeVal(p transport.Publication) []byte {
	return append(binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(p.Data)), p.Offset), p.Data...)
}

func decodeDedupe(k, v []byte, epoch string) (transport.LogKey, error) {
	off, n := binary.Uvarint(v)
	if len(k) < 8 || n <= 0 {
		return transport.LogKey{}, errors.New("corrupt idempotency record")
	}
	return transport.LogKey{
		Key: string(k[8:]),
		Pub: transport.Publication{Offset: off, Epoch: epoch, Time: int64(binary.BigEndian.Uint64(k)), Data: bytes.Clone(v[n:])},
	}, nil
}
