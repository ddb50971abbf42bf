package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Pipelined replication. The owner assigns a stored publication its
// offset under the channel lock and queues it (pendingPub); the channel's
// flusher, one goroutine at a time per channel, takes everything queued as
// one batch, writes it to the Log (concurrent appends, so they share the
// Log's group commit) while sending it to the backup as one request, and
// only then, under the lock again, confirms the batch: the publications
// enter the readable history, are fanned out and acknowledged, in offset
// order. Publications queued while a batch is in flight form the next
// one, so a busy channel orders many publications per round trip instead
// of one.
//
// Only one batch per channel is in flight from an owner, so the backup
// applies the copies in the order they were assigned however its request
// goroutines are scheduled, and detects a gap (errNeedSync) exactly as
// before.
//
// A batch that cannot be confirmed is abandoned (abandon): when this node
// stops ordering the channel (a handover, a view change, the quorum lost,
// a backup that orders it), when the copy to the backup or the owner's
// own Log write fails, or when the stream is restarted. Every unconfirmed publication of the channel is then failed,
// the next offset goes back to the last confirmed one, and the backup,
// which may hold copies of the abandoned publications, gets a full
// snapshot before any new copy, so an abandoned offset reused for other
// data never survives on it.

// replicateTimeout bounds the copy of a batch to the backup.
const replicateTimeout = 2 * time.Second

// pendingPub is a stored publication that has an offset but is not
// confirmed yet. done is closed once err is set (abandoned) or the
// publication is confirmed; whoever removes it from chanState.pend (under
// the lock) closes it, exactly once.
type pendingPub struct {
	pub  transport.Publication
	key  string
	err  error
	done chan struct{}
}

// await waits for p's outcome, until ctx ends or the broker closes.
func (b *Broker) await(ctx context.Context, ch string, p *pendingPub) (transport.Publication, error) {
	select {
	case <-p.done:
		if p.err != nil {
			return transport.Publication{}, p.err
		}
		return p.pub, nil
	case <-ctx.Done():
		return transport.Publication{}, fmt.Errorf("%w: publication on %s not confirmed in time: %w", transport.ErrUnavailable, ch, ctx.Err())
	case <-b.ctx.Done():
		return transport.Publication{}, transport.ErrClosed
	}
}

// enqueue assigns pub (offset set by the caller) to s and makes sure a
// flusher runs; s is locked.
func (b *Broker) enqueue(s *chanState, pub transport.Publication, key string) *pendingPub {
	p := &pendingPub{pub: pub, key: key, done: make(chan struct{})}
	s.next = pub.Offset
	s.pend = append(s.pend, p)
	if key != "" {
		s.pendKeys[key] = p
	}
	if !s.flushing {
		s.flushing = true
		if !b.goFn(func() { b.flushLoop(s) }) {
			s.flushing = false
			b.abandon(s, transport.ErrClosed)
		}
	}
	return p
}

// abandon fails every unconfirmed publication of s with err; s is locked.
func (b *Broker) abandon(s *chanState, err error) {
	if len(s.pend) == 0 {
		return
	}
	if s.sent > 0 {
		s.needSnap = true // the backup may have applied the batch in flight
	}
	for _, p := range s.pend {
		p.err = err
		close(p.done)
	}
	clear(s.pend)
	s.pend, s.sent = s.pend[:0], 0
	clear(s.pendKeys)
	s.next = s.offset
	s.gen++
}

// disown stops ordering s here (another node does, or is about to) and
// abandons its unconfirmed publications; s is locked. hint is where their
// publishers are sent: the request is retried there, with its idempotency
// key, which finds the publication if its copy survived.
func (b *Broker) disown(s *chanState, hint transport.Peer) {
	s.owned = false
	b.abandon(s, notOwner(hint))
}

// stopOrdering stops ordering s here because this node lost the quorum;
// s is locked. Its unconfirmed publications fail with ErrNoQuorum: their
// publishers retry at a node of the majority, with their idempotency
// keys.
func (b *Broker) stopOrdering(s *chanState) {
	s.owned = false
	b.abandon(s, ErrNoQuorum)
}

// flushLoop confirms s's queued publications batch by batch until none is
// left. It runs on a goroutine started by enqueue; s.flushing says one
// runs.
func (b *Broker) flushLoop(s *chanState) {
	for {
		if s.lock(b.ctx) != nil {
			return // closing: waiters give up on b.ctx
		}
		if len(s.pend) == 0 {
			s.flushing = false
			s.unlock()
			return
		}
		if !b.quorate() {
			b.stopOrdering(s)
			s.unlock()
			continue
		}
		owner, backup, hasBackup := b.ranked(s.name)
		if owner.Name != b.cfg.Self.Name {
			// The view moved: this node no longer orders the channel, and
			// nothing of what is queued was sent anywhere.
			b.disown(s, owner)
			s.unlock()
			continue
		}
		batch := slices.Clone(s.pend)
		s.sent = len(batch)
		gen := s.gen
		var logDone chan struct{}
		if b.cfg.Log != nil {
			logDone = make(chan struct{})
			s.logDone = logDone
		}
		var snap *snapshot
		if hasBackup && s.needSnap {
			snap = b.batchSnapshot(s, batch)
		}
		s.unlock()

		logErr, copyErr, snapped := b.sendBatch(s, gen, batch, backup, hasBackup, snap, logDone)
		standby := false
		if copyErr != nil && !errors.Is(copyErr, errNotOwner) {
			if err := b.copyToStandby(s, gen, batch, backup); err == nil {
				standby, copyErr = true, nil
			} else {
				copyErr = fmt.Errorf("%w (and to a standby: %w)", copyErr, err)
			}
		}

		if s.lock(b.ctx) != nil {
			return
		}
		if s.gen != gen {
			s.unlock() // abandoned while in flight: its waiters have their error
			continue
		}
		switch {
		case logErr != nil:
			b.abandon(s, logErr)
			s.unlock()
			continue
		case errors.Is(copyErr, errNotOwner):
			// The backup orders the channel in its own view and refused
			// the copy: two nodes must not both order it. Stop here and
			// send the publishers there.
			hint, _ := hintOf(copyErr)
			b.log.Debug("backup refused copy, handing over", "channel", s.name, "backup", backup.Name)
			b.disown(s, hint)
			s.unlock()
			continue
		case copyErr != nil:
			// Nothing is acknowledged that the owner alone holds: an owner
			// cut off from its backup and every standby may be the
			// minority side of a partition, whose copy the majority never
			// sees. The publishers retry (with their idempotency keys)
			// until a copy succeeds.
			b.log.Warn("replication to backup failed, publications refused", "channel", s.name, "backup", backup.Name,
				"offsets", fmt.Sprintf("%d-%d", batch[0].pub.Offset, batch[len(batch)-1].pub.Offset), "err", copyErr)
			b.abandon(s, fmt.Errorf("%w: channel %s: no copy at its backup %s: %w", transport.ErrUnavailable, s.name, backup.Name, copyErr))
			s.unlock()
			continue
		case standby:
			// The backup missed this batch: it gets the whole stream with
			// the next one, or membership replaces it.
			s.needSnap = true
		case snapped:
			s.needSnap = false
		}
		local := b.confirm(s, batch)
		s.unlock()
		if local != nil {
			local.drain(b)
		}
		// Acknowledged only now, after the owner's own handler has it, as
		// when the copy was synchronous.
		for _, p := range batch {
			close(p.done)
		}
	}
}

// errNoStandby means the view has no node to copy a batch to besides the
// owner and its backup.
var errNoStandby = errors.New("mesh: no standby node")

// copyToStandby copies the channel's confirmed stream and batch, as a
// snapshot, to the node ranked after the backup, when the backup could
// not be reached: it is dead and membership has not noticed yet, or cut
// off. Confirming on that copy keeps the channel going meanwhile, and
// safe: the standby holds every acknowledged publication, and a takeover
// collects the most recent copy wherever it is. An owner cut off from the
// majority reaches no standby either, and acknowledges nothing. s is not
// locked.
func (b *Broker) copyToStandby(s *chanState, gen uint64, batch []*pendingPub, backup transport.Peer) error {
	var standby transport.Peer
	var best uint64
	for _, p := range b.peers.Load().list {
		if p.Name == b.cfg.Self.Name || p.Name == backup.Name {
			continue
		}
		if sc := score(p.Name, s.name); standby.Name == "" || sc > best {
			standby, best = p, sc
		}
	}
	if standby.Name == "" {
		return errNoStandby
	}
	ctx, cancel := context.WithTimeout(b.ctx, replicateTimeout)
	defer cancel()
	if err := s.lock(ctx); err != nil {
		return err
	}
	if s.gen != gen {
		s.unlock()
		return fmt.Errorf("%w: batch abandoned", transport.ErrUnavailable)
	}
	snap := b.batchSnapshot(s, batch)
	s.unlock()
	_, err := b.call(ctx, standby, opSnapshot, s.name, enc(nil).snapshot(snap))
	return err
}

// sendBatch makes batch durable here and copies it to the backup, at the
// same time; s is not locked. snap, when set, is sent instead of the
// incremental copy. It reports the Log's error, the copy's, and whether
// a full snapshot reached the backup.
func (b *Broker) sendBatch(s *chanState, gen uint64, batch []*pendingPub, backup transport.Peer, hasBackup bool, snap *snapshot, logDone chan struct{}) (logErr, copyErr error, snapped bool) {
	ctx, cancel := context.WithTimeout(b.ctx, replicateTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if b.cfg.Log != nil {
		wg.Go(func() {
			defer close(logDone)
			lctx, lcancel := context.WithTimeout(b.ctx, b.cfg.RequestTimeout)
			defer lcancel()
			logErr = b.logAppendAll(lctx, s.name, batch)
		})
	}
	if hasBackup {
		t0 := time.Now()
		if snap == nil {
			e := enc(make([]byte, 0, 64*len(batch))).u(uint64(len(batch)))
			for _, p := range batch {
				e = e.pub(p.pub).str(p.key)
			}
			_, copyErr = b.call(ctx, backup, opReplicateBatch, s.name, e)
			if errors.Is(copyErr, errNeedSync) {
				// Build the snapshot from the confirmed state, which only
				// this flusher changes while the batch is in flight.
				if err := s.lock(ctx); err != nil {
					copyErr = err
				} else {
					if s.gen == gen {
						snap = b.batchSnapshot(s, batch)
					}
					s.unlock()
				}
			}
		}
		if snap != nil {
			_, copyErr = b.call(ctx, backup, opSnapshot, s.name, enc(nil).snapshot(snap))
			snapped = copyErr == nil
		}
		if copyErr == nil && b.cfg.ReplicateSeconds != nil {
			b.cfg.ReplicateSeconds.Observe(time.Since(t0).Seconds())
		}
	}
	wg.Wait()
	return logErr, copyErr, snapped
}

// batchSnapshot is s's confirmed state followed by batch, for a backup
// that must be brought up to date; s is locked.
func (b *Broker) batchSnapshot(s *chanState, batch []*pendingPub) *snapshot {
	snap := b.snapshotOf(s)
	for _, p := range batch {
		snap.Pubs = append(snap.Pubs, p.pub)
		if p.key != "" {
			snap.Dedupe = append(snap.Dedupe, dedupeEntry{key: p.key, at: p.pub.Time, pub: p.pub})
		}
	}
	last := batch[len(batch)-1].pub
	snap.Offset, snap.LastTime = last.Offset, last.Time
	if len(snap.Pubs) > b.cfg.HistorySize {
		snap.Pubs = snap.Pubs[len(snap.Pubs)-b.cfg.HistorySize:]
	}
	return snap
}

// confirm makes batch (the head of s.pend) readable and fans it out, in
// order; s is locked. The caller closes each done after draining the
// returned localChan.
func (b *Broker) confirm(s *chanState, batch []*pendingPub) *localChan {
	var local *localChan
	for _, p := range batch {
		s.offset, s.lastTime = p.pub.Offset, p.pub.Time
		b.keep(s, p.pub)
		if p.key != "" {
			d := dedupeEntry{key: p.key, at: p.pub.Time, pub: p.pub}
			s.dedupe[d.key] = d
			s.dedupeOrder = append(s.dedupeOrder, d)
			delete(s.pendKeys, p.key)
		}
		if lc := b.fanout(s, p.pub); lc != nil {
			local = lc
		}
	}
	b.account(s)
	n := copy(s.pend, s.pend[len(batch):])
	clear(s.pend[n:])
	s.pend, s.sent = s.pend[:n], 0
	return local
}
