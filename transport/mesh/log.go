package mesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// The durable side of a channel's stream (Config.Log). Memory stays the
// read path; the Log is written before memory changes, so whatever this
// node acknowledges (as owner) or confirms (as backup) is on disk, and a
// failed write leaves memory as it was. Bolt (bolt.go) is the Log cmd
// wires in with --data.

// Log is durable storage for the channel streams a broker orders or keeps
// a replica of, so that history, epoch and offsets survive a restart of
// every node. A broker given a Log writes to it before it acknowledges,
// keeps its in-memory history as the read path, and reads the Log back only
// when it starts.
//
// A Log applies its own retention (count, age, idempotency window) when it
// writes and when it loads; configure it with the broker's values.
//
// Implementations are safe for concurrent use. Writes to one channel come
// in batches: the appends of a batch may be issued concurrently (so that
// they can share a commit) and may be applied in any order among
// themselves; each batch completes before the next is issued. When a call
// fails, or its ctx ends before it returns, the write may or may not have
// been made durable; the broker then treats it as not done and does not
// acknowledge it.
type Log interface {
	// Append durably adds pub at the end of channel's stream, with the
	// idempotency key it was published with ("" for none). pub.Epoch must
	// be the stream's stored epoch (Reset starts an epoch).
	Append(ctx context.Context, channel string, pub transport.Publication, key string) error
	// Reset durably replaces channel's stream with st: a new epoch, or a
	// copy received from another node.
	Reset(ctx context.Context, channel string, st LogState) error
	// Load returns channel's stored stream, with retention applied. A
	// channel with nothing stored has an empty Epoch.
	Load(ctx context.Context, channel string) (LogState, error)
	// Channels lists the channels with a stored stream.
	Channels(ctx context.Context) ([]string, error)
	// Close flushes and releases the storage. The broker never calls it:
	// whoever opened the Log closes it, after closing the broker.
	Close() error
}

// LogState is a channel's stream as a Log stores it.
type LogState struct {
	Epoch    string
	Offset   uint64 // the last offset assigned in Epoch
	LastTime int64  // Unix ms of the stream's last write; orders epochs
	// Pubs is the retained history, oldest first, all in Epoch.
	Pubs []transport.Publication
	// Keys are the idempotency keys still remembered, oldest first.
	Keys []LogKey
}

// LogKey is a remembered idempotency key and the publication it produced.
// The key is remembered from Pub.Time.
type LogKey struct {
	Key string
	Pub transport.Publication
}

// loadLog restores every stored stream as a replica (not owned): the first
// request for a channel then runs a takeover, which compares this copy with
// the peers' and continues the most recent one.
func (b *Broker) loadLog(ctx context.Context) error {
	if b.cfg.Log == nil {
		return nil
	}
	names, err := b.cfg.Log.Channels(ctx)
	if err != nil {
		return fmt.Errorf("mesh broker: history log: %w", err)
	}
	for _, name := range names {
		st, err := b.cfg.Log.Load(ctx, name)
		if err != nil {
			return fmt.Errorf("mesh broker: history log: %w", err)
		}
		if st.Epoch == "" {
			continue
		}
		snap := &snapshot{Epoch: st.Epoch, Offset: st.Offset, LastTime: st.LastTime, Pubs: st.Pubs}
		for _, k := range st.Keys {
			snap.Dedupe = append(snap.Dedupe, dedupeEntry{key: k.Key, at: k.Pub.Time, pub: k.Pub})
		}
		s := b.chanFor(name)
		if err := s.lock(ctx); err != nil {
			return err
		}
		b.applySnapshot(s, snap)
		s.unlock()
	}
	if len(names) > 0 {
		b.log.Info("history log loaded", "channels", len(names))
	}
	return nil
}

// resetStream makes snap durable as the channel's stream, then applies
// it to s (locked).
func (b *Broker) resetStream(ctx context.Context, s *chanState, snap *snapshot) error {
	if b.cfg.Log != nil {
		if err := b.waitLog(ctx, s); err != nil {
			return err
		}
		st := LogState{Epoch: snap.Epoch, Offset: snap.Offset, LastTime: snap.LastTime, Pubs: snap.Pubs}
		for _, d := range snap.Dedupe {
			st.Keys = append(st.Keys, LogKey{Key: d.key, Pub: d.pub})
		}
		if err := b.cfg.Log.Reset(ctx, s.name, st); err != nil {
			return fmt.Errorf("%w: history log: %w", transport.ErrUnavailable, err)
		}
	}
	b.applySnapshot(s, snap)
	return nil
}

// newEpoch starts the channel's stream over in a fresh epoch; s is locked.
func (b *Broker) newEpoch(ctx context.Context, s *chanState) error {
	var e [6]byte
	_, _ = rand.Read(e[:])
	return b.resetStream(ctx, s, &snapshot{Epoch: hex.EncodeToString(e[:]), LastTime: time.Now().UnixMilli()})
}

// waitLog waits until the owner's log writes for s, issued by its flusher
// without the lock, are done; s is locked. Every other write of the
// channel's log (a replica's copies, a snapshot, a new epoch) comes after
// them, so a write abandoned while in flight never lands on top of a
// newer one.
func (b *Broker) waitLog(ctx context.Context, s *chanState) error {
	if s.logDone == nil {
		return nil
	}
	select {
	case <-s.logDone:
		s.logDone = nil
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: history log of %s busy: %w", transport.ErrUnavailable, s.name, ctx.Err())
	}
}

// logAppendAll writes batch to the Log. The appends are issued together
// so the Log can commit them in one transaction (one fsync).
func (b *Broker) logAppendAll(ctx context.Context, ch string, batch []*pendingPub) error {
	if len(batch) == 1 {
		return b.appendOne(ctx, ch, batch[0].pub, batch[0].key)
	}
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, p := range batch {
		wg.Go(func() { errs[i] = b.appendOne(ctx, ch, p.pub, p.key) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) appendOne(ctx context.Context, ch string, pub transport.Publication, key string) error {
	if err := b.cfg.Log.Append(ctx, ch, pub, key); err != nil {
		return fmt.Errorf("%w: history log: %w", transport.ErrUnavailable, err)
	}
	return nil
}
