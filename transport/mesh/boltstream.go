package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/meshchat/meshchat/transport"
)

// The channel streams in a Bolt file: Append, Reset, Load and Channels
// (the Log interface), retention applied on disk, and the records' byte
// layout (see the file layout in bolt.go).

func checkChannel(ch string) error {
	if ch == "" || len(ch) > 1024 {
		return fmt.Errorf("mesh: history log: bad channel name length %d", len(ch))
	}
	return nil
}

// Append implements Log. The count, age and idempotency
// retention of the channel is applied in the same transaction.
func (b *Bolt) Append(ctx context.Context, ch string, pub transport.Publication, key string) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if len(key) > 4096 {
		return fmt.Errorf("mesh: history log: idempotency key of %d bytes", len(key))
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
			return fmt.Errorf("mesh: history log %s: %w", ch, err)
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

// Reset implements Log.
func (b *Bolt) Reset(ctx context.Context, ch string, st LogState) error {
	if err := checkChannel(ch); err != nil {
		return err
	}
	if st.Epoch == "" {
		return errors.New("mesh: history log: Reset without an epoch")
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

// Load implements Log.
func (b *Bolt) Load(ctx context.Context, ch string) (LogState, error) {
	var st LogState
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
		st = LogState{Epoch: h.epoch, Offset: h.offset, LastTime: h.lastTime}
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
		return LogState{}, fmt.Errorf("mesh: history log load %s: %w", ch, err)
	}
	return st, nil
}

// Channels implements Log.
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
		return nil, fmt.Errorf("mesh: history log channels: %w", err)
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

func decodeDedupe(k, v []byte, epoch string) (LogKey, error) {
	off, n := binary.Uvarint(v)
	if len(k) < 8 || n <= 0 {
		return LogKey{}, errors.New("corrupt idempotency record")
	}
	return LogKey{
		Key: string(k[8:]),
		Pub: transport.Publication{Offset: off, Epoch: epoch, Time: int64(binary.BigEndian.Uint64(k)), Data: bytes.Clone(v[n:])},
	}, nil
}
