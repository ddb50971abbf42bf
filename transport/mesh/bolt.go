package mesh

import (
	"bytes"
	"cmp"
	"context"
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

// Bolt is the broker's durability plug-in (Config.Log): the history log
// in one bbolt file, which cmd opens with --data. This file opens and
// checks the file, closes it, and runs its group-commit writer; the
// streams in it are boltstream.go. docs/storage.md has the design.

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

// Bolt is a Log in one bbolt file. Writes from concurrent
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

var _ Log = (*Bolt)(nil)

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
		return nil, errors.New("mesh: history log: empty path")
	case opts.MaxBatch < 0 || opts.LockTimeout < 0:
		return nil, errors.New("mesh: history log: negative size or duration in BoltOptions")
	}
	if err := transport.FillRetention("mesh: history log", &opts.HistorySize, &opts.HistoryMaxAge, &opts.DedupeWindow); err != nil {
		return nil, err
	}
	opts.MaxBatch = cmp.Or(opts.MaxBatch, DefaultBoltMaxBatch)
	opts.LockTimeout = cmp.Or(opts.LockTimeout, DefaultBoltLockTimeout)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mesh: history log: %w", err)
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
		return nil, fmt.Errorf("mesh: history log %s: %w", path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return initLog(tx, path) }); err != nil {
		db.Close()
		return nil, err
	}
	b := &Bolt{db: db, opts: opts, ops: make(chan *boltOp), quit: make(chan struct{})}
	if err := db.Update(func(tx *bbolt.Tx) error { return b.trimAll(tx, time.Now().UnixMilli()) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("mesh: history log %s: trim: %w", path, err)
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
			return fmt.Errorf("mesh: history log %s: create: %w", path, err)
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
		return fmt.Errorf("mesh: history log write: %w", ctx.Err())
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		// Taken by the writer: it may still commit.
		return fmt.Errorf("mesh: history log write: %w", ctx.Err())
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
				err = fmt.Errorf("mesh: history log commit: %w", err)
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

func (b *Bolt) closed() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}
