package mesh

import (
	"context"
	"fmt"

	"github.com/meshchat/meshchat/transport"
)

// The replica side: a channel's backup applies its owner's batches of
// copies, or a full snapshot, to the replica it keeps (with a Log,
// durably first), and refuses them when it orders the channel itself.
// The owner's side of replication is pipeline.go.

// serveReplicateBatch answers opReplicateBatch (n (publication key)*n):
// an owner's batch of copies, in offset order.
func (b *Broker) serveReplicateBatch(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	n := d.count()
	pubs, keys := make([]transport.Publication, 0, n), make([]string, 0, n)
	for ; n > 0 && d.err == nil; n-- {
		pubs, keys = append(pubs, d.pub()), append(keys, d.str())
	}
	s, err := b.lockReplica(ctx, from, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	return nil, b.applyCopies(ctx, s, pubs, keys)
}

// serveSnapshot answers opSnapshot: the owner's whole stream, for a
// backup that is new or does not continue the owner's copies.
func (b *Broker) serveSnapshot(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	snap := d.snapshot()
	s, err := b.lockReplica(ctx, from, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	return nil, b.resetStream(ctx, s, snap)
}

// lockReplica returns ch's state locked, for a copy or snapshot from
// from, which orders the channel, once d, the request's body, was
// decoded without error. A node that orders it itself, and
// whose view agrees, refuses: the copy may be a late one from an owner
// that has since handed over to this node, and two nodes must not both
// order the channel. The sender stops ordering and follows the hint.
func (b *Broker) lockReplica(ctx context.Context, from, ch string, d *dec) (*chanState, error) {
	if d.err != nil {
		return nil, d.err
	}
	s := b.chanFor(ch)
	if err := s.lock(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	if s.owned {
		if o := ownerIn(b.livePeers(), ch); o.Name == b.cfg.Self.Name {
			s.unlock()
			return nil, notOwner(b.cfg.Self)
		}
		hint, _ := b.peerByName(from)
		b.disown(s, hint)
	}
	return s, nil
}

// applyCopies applies an owner's batch of copies to the replica s
// (locked), in order. Copies the replica already has are skipped (a
// retried batch); one that does not continue it is errNeedSync. With a
// Log the batch is made durable first; when that fails memory is left as
// it was.
func (b *Broker) applyCopies(ctx context.Context, s *chanState, pubs []transport.Publication, keys []string) error {
	i := 0
	for i < len(pubs) && s.has && s.epoch == pubs[i].Epoch && pubs[i].Offset <= s.offset {
		i++
	}
	pubs, keys = pubs[i:], keys[i:]
	if len(pubs) == 0 {
		return nil
	}
	if !s.has || s.epoch != pubs[0].Epoch || s.offset+1 != pubs[0].Offset {
		return errNeedSync
	}
	for j := 1; j < len(pubs); j++ {
		if pubs[j].Epoch != s.epoch || pubs[j].Offset != pubs[j-1].Offset+1 {
			return fmt.Errorf("%w: copies out of order", errBadFrame)
		}
	}
	if b.cfg.Log != nil {
		if err := b.waitLog(ctx, s); err != nil {
			return err
		}
		batch := make([]*pendingPub, len(pubs))
		for j := range pubs {
			batch[j] = &pendingPub{pub: pubs[j], key: keys[j]}
		}
		if err := b.logAppendAll(ctx, s.name, batch); err != nil {
			return err // memory unchanged: the next copy finds a gap and syncs
		}
	}
	for j, pub := range pubs {
		s.offset, s.lastTime = pub.Offset, pub.Time
		b.keep(s, pub)
		if keys[j] != "" {
			de := dedupeEntry{key: keys[j], at: pub.Time, pub: pub}
			s.dedupe[keys[j]] = de
			s.dedupeOrder = append(s.dedupeOrder, de)
		}
	}
	s.next = s.offset
	b.account(s)
	b.expireDedupe(s, pubs[len(pubs)-1].Time)
	return nil
}
