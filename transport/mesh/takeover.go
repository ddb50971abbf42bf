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

// Taking a channel over, from both sides: the node that finds itself
// owner in its view collects every peer's copy and continues the most
// recent one (acquireOwned, takeover); a peer asked for its copy refuses
// when its own view says it is the owner, or hands over (serveState).
// docs/cluster.md, "When views disagree", has the rules.

// better reports whether snapshot a holds a more recent stream than b.
// Within one epoch the higher offset wins; across epochs (only after a
// stream was lost) the one written last wins, except that an empty stream
// never replaces one with publications: an epoch started while every copy
// was out of reach (nodes still restarting and loading their history logs)
// must not erase the copy that comes back.
func better(a, b *snapshot) bool {
	if b == nil {
		return true
	}
	if a.Epoch == b.Epoch {
		return a.Offset > b.Offset
	}
	if (a.Offset == 0) != (b.Offset == 0) {
		return a.Offset > 0
	}
	return a.LastTime > b.LastTime
}

// acquireOwned returns the channel's state locked and owned by this node,
// taking ownership over if needed. It answers not-owner (with a hint) when
// this node's view says another node owns ch, or when a peer refused the
// takeover.
func (b *Broker) acquireOwned(ctx context.Context, ch string) (*chanState, error) {
	if !b.quorate() {
		// The cached quorum may lag the cluster's table (a partition
		// that just healed): count again before refusing.
		if b.livePeers(); !b.quorate() {
			return nil, ErrNoQuorum
		}
	}
	if o := b.ownerOf(ch); o.Name != b.cfg.Self.Name {
		// The cached view may lag the cluster's table: look again before
		// turning the request away.
		if o = ownerIn(b.livePeers(), ch); o.Name != b.cfg.Self.Name {
			return nil, notOwner(o)
		}
	}
	s := b.chanFor(ch)
	if err := s.lock(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	if !b.quorate() {
		// Lost while this request waited for the lock.
		b.stopOrdering(s)
		s.unlock()
		return nil, ErrNoQuorum
	}
	if s.owned {
		return s, nil
	}
	// Taking a channel over is the decision that must not be made on a
	// stale view.
	ps := b.livePeers()
	if o := ownerIn(ps, ch); o.Name != b.cfg.Self.Name {
		s.unlock()
		return nil, notOwner(o)
	}
	if err := b.takeover(ctx, s, ps); err != nil {
		s.unlock()
		return nil, err
	}
	return s, nil
}

// takeoverTimeout bounds how long a new owner waits for its peers' copies
// of a channel. A peer that cannot be reached (errPeerDown: connection
// refused or lost, as when it died or left) is skipped; one that is
// reachable but does not answer in time, or answers that it is busy, fails
// the takeover (ErrUnavailable, the caller retries): it may still be
// ordering the channel, and going on without its copy could leave two
// owners. Membership drops a peer that stays silent.
const takeoverTimeout = 2 * time.Second

// takeover makes this node the owner of s (locked), in view ps. It asks
// every peer of the view (and the node it last handed s to) for its copy
// of the stream. A peer whose own view says it is the owner refuses: the
// takeover is abandoned and the caller is sent there, so two nodes with
// different views never both order the channel (the refusal needs no
// lock, so two nodes taking over at once cannot wait on each other). A
// peer that answers hands over and stops ordering. The new owner keeps
// the most recent copy (normally the replica it kept as the channel's
// backup, or the state handed over by the previous owner) and continues
// that stream with the same epoch and the next offset; with no copy
// anywhere it starts a new epoch. With a Config.Log the adopted stream is
// made durable first; when that fails this node does not take ownership.
// Once it owns the channel it tells every peer, which re-register their
// subscriptions and present users with it, and re-registers its own.
func (b *Broker) takeover(ctx context.Context, s *chanState, ps *peerSet) error {
	began := time.Now()
	var best *snapshot
	if s.has {
		best = b.snapshotOf(s)
	}
	peers := ps.list
	if h := s.handedTo; h.Name != "" && !ps.alive[h.Name] {
		peers = append(slices.Clone(peers), h)
	}
	qctx, cancel := context.WithTimeout(ctx, takeoverTimeout)
	defer cancel()
	req := enc(nil).str(b.cfg.Self.Addr)
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		snaps   []*snapshot
		refused error
		silent  error
	)
	for _, p := range peers {
		if p.Name == b.cfg.Self.Name {
			continue
		}
		wg.Go(func() {
			body, err := b.call(qctx, p, opState, s.name, req)
			if errors.Is(err, errNotOwner) {
				mu.Lock()
				refused = err
				mu.Unlock()
				cancel() // the others' answers no longer matter
				return
			}
			if errors.Is(err, errPeerDown) {
				b.log.Debug("takeover: peer unreachable, going on without it", "channel", s.name, "peer", p.Name, "err", err)
				return
			}
			if err != nil {
				mu.Lock()
				silent = fmt.Errorf("%w: takeover of %s: no answer from %s: %w", transport.ErrUnavailable, s.name, p.Name, err)
				mu.Unlock()
				return
			}
			d := dec{b: body}
			if !d.bool1() {
				return
			}
			snap := d.snapshot()
			if d.err != nil {
				return
			}
			mu.Lock()
			snaps = append(snaps, snap)
			mu.Unlock()
		})
	}
	wg.Wait()
	if refused != nil {
		// Peers that already answered stopped ordering and point here;
		// they keep their copies, which the real owner's takeover
		// collects.
		b.log.Debug("takeover refused", "channel", s.name, "err", refused)
		return refused
	}
	if silent != nil {
		b.log.Debug("takeover failed", "channel", s.name, "err", silent)
		return silent
	}
	for _, snap := range snaps {
		if better(snap, best) {
			best = snap
		}
	}
	switch {
	case best == nil:
		if err := b.newEpoch(ctx, s); err != nil {
			return err
		}
		b.log.Debug("channel created", "channel", s.name, "epoch", s.epoch)
	case s.has && best.Epoch == s.epoch && best.Offset == s.offset:
		// Our own copy is the best: continue it.
	default:
		if err := b.resetStream(ctx, s, best); err != nil {
			return err
		}
	}
	for _, snap := range snaps {
		b.mergeMembers(s, snap)
	}
	b.dropGone(s)
	s.owned = true
	s.handedTo = transport.Peer{}
	// The backup's replica may have been written by another owner, or hold
	// copies abandoned before this stream was adopted: the first batch
	// sends it the whole stream.
	s.needSnap = true
	b.log.Debug("took ownership", "channel", s.name, "epoch", s.epoch, "offset", s.offset, "copies", len(snaps))
	b.announceOwner(s.name, peers)
	b.catchUpLocal(s)
	if best == nil {
		b.counts.created.Add(1)
		return nil
	}
	b.counts.takeovers.Add(1)
	if b.cfg.TakeoverSeconds != nil {
		b.cfg.TakeoverSeconds.Observe(time.Since(began).Seconds())
	}
	return nil
}

// catchUpLocal re-registers this node's own subscription to s (locked,
// just taken over) when it lags the adopted stream: the previous owner
// could not reach this node, or did not list it yet, and no later
// publication may come to show the gap. The peers catch up on the
// announcement; this node is not sent one. The re-registration runs in
// the background: it waits for s, which the caller holds.
func (b *Broker) catchUpLocal(s *chanState) {
	lc := b.localFor(s.name, false)
	if lc == nil {
		return
	}
	lc.mu.Lock()
	behind := lc.active && (!lc.known || lc.epoch != s.epoch || lc.offset < s.offset)
	lc.mu.Unlock()
	if behind {
		b.resync(s.name)
	}
}

// announceOwner tells peers that this node now orders ch, so that each
// re-registers its subscription and present users with it, whatever its
// own view says yet.
func (b *Broker) announceOwner(ch string, peers []transport.Peer) {
	var msg []byte
	for _, p := range peers {
		if p.Name == b.cfg.Self.Name {
			continue
		}
		if msg == nil {
			msg = noticeMsg(ch)
		}
		b.sendTo(p, msg)
	}
}

// serveState answers opState (asker addr:str -> has:bool [snapshot]): a
// node taking the channel over asks for this node's copy.
func (b *Broker) serveState(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	asker := transport.Peer{Name: from, Addr: d.str()}
	if d.err != nil {
		return nil, d.err
	}
	// Refuse a takeover while this node's own view (read afresh) says
	// it orders the channel: handing over now could leave two owners
	// if the asker's view is the stale one. The asker follows the
	// hint; once the views agree, the takeover succeeds. Decided
	// before taking the lock, so two nodes taking over at once never
	// wait on each other.
	// A node without the quorum orders nothing, whatever its view: it
	// hands its copy over to the side that has it.
	if o := ownerIn(b.livePeers(), ch); o.Name == b.cfg.Self.Name && b.quorate() {
		return nil, notOwner(b.cfg.Self)
	}
	// A node taking a channel over asks every peer for its copy.
	// Creating an empty state here to say "none" would leave one on
	// every node for every channel ever created (each user's DM
	// inbox among them).
	b.chMu.RLock()
	s := b.chans[ch]
	b.chMu.RUnlock()
	if s == nil {
		return enc(nil).bool1(false), nil
	}
	if err := s.lock(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	defer s.unlock()
	// The asker is taking over: hand over and stop ordering here,
	// and send the channel's requests there until the view changes.
	// Publications still in flight here are abandoned, not waited
	// for (the asker holds its own lock on the channel meanwhile, and
	// may be the backup they are being copied to); their publishers
	// retry at the asker.
	b.disown(s, asker)
	s.handedTo = asker
	if !s.has {
		return enc(nil).bool1(false), nil
	}
	return enc(nil).bool1(true).snapshot(b.snapshotOf(s)), nil
}
