package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// chanState is a channel's stream as kept by its owner, or as a replica
// kept by its backup (owned == false). It is guarded by lk, a mutex that
// can be acquired with a deadline: a node taking over holds it while it
// asks its peers for their copies. The copy to the backup runs without it
// (pipeline.go).
type chanState struct {
	lk   chan struct{}
	name string

	owned bool // this node currently orders the channel
	has   bool // epoch is set: the stream exists here (owned or replica)

	// handedTo is the node this one last handed the channel over to (it
	// answered that node's takeover). A later takeover here asks it for
	// its copy even when this node's view does not list it: it may be a
	// node that joined and that this node has not heard of from gossip
	// yet, and it may have ordered the channel since.
	handedTo transport.Peer

	// epoch, offset, lastTime, hist and dedupe are the confirmed stream:
	// what is readable, fanned out and acknowledged (pipeline.go).
	epoch    string
	offset   uint64
	lastTime int64
	hist     ring

	// The owner's unconfirmed publications (pipeline.go). next is the last
	// offset assigned (offset when none is pending); pend are the assigned
	// publications in offset order, of which the first sent are the
	// flusher's batch in flight; pendKeys indexes their idempotency keys.
	next     uint64
	pend     []*pendingPub
	sent     int
	pendKeys map[string]*pendingPub
	flushing bool   // a flusher goroutine runs for the channel
	gen      uint64 // bumped whenever pend is abandoned
	needSnap bool   // the backup may hold other data past offset: resend all
	// logDone, when set, is closed once the flusher's log writes are done
	// (waitLog).
	logDone chan struct{}

	dedupe      map[string]dedupeEntry
	dedupeOrder []dedupeEntry // by at, for expiry

	interest map[string]struct{}            // nodes subscribed
	presence map[string]map[string]struct{} // user -> nodes
}

type dedupeEntry struct {
	key string
	at  int64 // Unix ms when first seen
	pub transport.Publication
}

func newChanState(name string, histSize int) *chanState {
	return &chanState{
		lk:       make(chan struct{}, 1),
		name:     name,
		hist:     ring{size: histSize},
		dedupe:   make(map[string]dedupeEntry),
		pendKeys: make(map[string]*pendingPub),
		interest: make(map[string]struct{}),
		presence: make(map[string]map[string]struct{}),
	}
}

func (s *chanState) lock(ctx context.Context) error {
	select {
	case s.lk <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mesh: channel %s busy: %w", s.name, ctx.Err())
	}
}

func (s *chanState) unlock() { <-s.lk }

// ring is a channel's retained history, oldest first. It grows as
// publications arrive, up to size, and only then wraps: most channels
// (every user's DM inbox, quiet rooms) retain a handful of publications,
// and preallocating size slots for each of them on the owner and again on
// the backup cost tens of KiB per user.
type ring struct {
	buf   []transport.Publication
	size  int // retention; buf never grows beyond it
	start int // index of the oldest once buf is full
}

func (r *ring) push(p transport.Publication) {
	if r.size <= 0 {
		return
	}
	if len(r.buf) < r.size {
		// Not full yet, so start is 0 and buf is in order.
		if len(r.buf) == cap(r.buf) {
			grown := make([]transport.Publication, len(r.buf), min(r.size, max(8, 2*cap(r.buf))))
			copy(grown, r.buf)
			r.buf = grown
		}
		r.buf = append(r.buf, p)
		return
	}
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) len() int { return len(r.buf) }

func (r *ring) at(i int) transport.Publication { return r.buf[(r.start+i)%len(r.buf)] }

// reset empties the ring and gives its memory back.
func (r *ring) reset() {
	r.buf, r.start = nil, 0
}

// all returns the retained publications, dropping those older than
// minTime (HistoryMaxAge; 0 keeps all).
func (r *ring) all(minTime int64) []transport.Publication {
	out := make([]transport.Publication, 0, r.len())
	for i := range r.len() {
		if p := r.at(i); p.Time >= minTime {
			out = append(out, p)
		}
	}
	return out
}

func (b *Broker) minTime() int64 {
	if b.cfg.HistoryMaxAge <= 0 {
		return 0
	}
	return time.Now().Add(-b.cfg.HistoryMaxAge).UnixMilli()
}

// history answers a HistoryRequest from s; s must be locked.
func (b *Broker) history(s *chanState, req transport.HistoryRequest) transport.HistoryResult {
	res := transport.HistoryResult{Latest: transport.StreamPosition{Offset: s.offset, Epoch: s.epoch}}
	all := s.hist.all(b.minTime())
	if req.Since != nil && req.Since.Epoch == s.epoch && req.Since.Epoch != "" && req.Since.Offset <= s.offset {
		oldest := s.offset - uint64(len(all)) // offset just before the oldest retained
		if req.Since.Offset >= oldest {
			res.Recovered = true
			pubs := all[len(all)-int(s.offset-req.Since.Offset):]
			if req.Limit > 0 && len(pubs) > req.Limit {
				pubs = pubs[:req.Limit]
			}
			res.Publications = pubs
			return res
		}
	}
	if req.Limit > 0 && len(all) > req.Limit {
		all = all[len(all)-req.Limit:]
	}
	res.Publications = all
	return res
}

// snapshotOf copies s for the wire; s must be locked.
func (b *Broker) snapshotOf(s *chanState) *snapshot {
	snap := &snapshot{
		Epoch:    s.epoch,
		Offset:   s.offset,
		LastTime: s.lastTime,
		Pubs:     s.hist.all(0),
		Dedupe:   slices.Clone(s.dedupeOrder),
		Interest: slices.Collect(maps.Keys(s.interest)),
		Presence: make(map[string][]string, len(s.presence)),
	}
	for u, ns := range s.presence {
		snap.Presence[u] = slices.Collect(maps.Keys(ns))
	}
	return snap
}

// applySnapshot replaces s's stream with snap. Interest and presence are
// merged, not replaced: they are refreshed by re-registration anyway, and
// a union never forgets a subscriber.
func (b *Broker) applySnapshot(s *chanState, snap *snapshot) {
	s.epoch, s.offset, s.lastTime = snap.Epoch, snap.Offset, snap.LastTime
	s.next = s.offset
	s.has = true
	s.hist.reset()
	for _, p := range snap.Pubs {
		s.hist.push(p)
	}
	clear(s.dedupe)
	s.dedupeOrder = s.dedupeOrder[:0]
	for _, d := range snap.Dedupe {
		s.dedupe[d.key] = d
		s.dedupeOrder = append(s.dedupeOrder, d)
	}
	b.mergeMembers(s, snap)
}

func (b *Broker) mergeMembers(s *chanState, snap *snapshot) {
	for _, n := range snap.Interest {
		s.interest[n] = struct{}{}
	}
	for u, ns := range snap.Presence {
		for _, n := range ns {
			addPresence(s, u, n)
		}
	}
}

func addPresence(s *chanState, user, node string) {
	set := s.presence[user]
	if set == nil {
		set = make(map[string]struct{})
		s.presence[user] = set
	}
	set[node] = struct{}{}
}

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
// subscriptions and present users with it.
func (b *Broker) takeover(ctx context.Context, s *chanState, ps *peerSet) error {
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
	return nil
}

// dropGone forgets interest and presence of nodes that are gone: listed
// by an earlier view and not by the current one. A node not listed yet
// is kept: it may have registered a moment after joining, before this
// node's view caught up, and forgetting it then would leave it without
// deliveries it believes it registered for. s must be locked.
func (b *Broker) dropGone(s *chanState) {
	ps := b.peers.Load()
	gone := func(n string) bool { return !ps.alive[n] && ps.seen[n] }
	for n := range s.interest {
		if gone(n) {
			delete(s.interest, n)
		}
	}
	for u, ns := range s.presence {
		for n := range ns {
			if gone(n) {
				delete(ns, n)
			}
		}
		if len(ns) == 0 {
			delete(s.presence, u)
		}
	}
}

// replicateTimeout bounds the copy of a batch to the backup.
const replicateTimeout = 2 * time.Second

// ownerPublish orders one publication. An ephemeral one is fanned out at
// once. A stored one gets its offset under the channel lock and is then
// confirmed by the channel's flusher (pipeline.go): made durable and
// copied to the backup, together with whatever else was queued meanwhile,
// then stored in history, fanned out and acknowledged, in offset order.
func (b *Broker) ownerPublish(ctx context.Context, ch string, data []byte, opts transport.PublishOptions) (transport.Publication, error) {
	s, err := b.acquireOwned(ctx, ch)
	if err != nil {
		return transport.Publication{}, err
	}
	// The view may have moved while this request waited for the lock (a
	// takeover that handed over clears owned, but a view change alone does
	// not until the membership goroutine gets the lock).
	if o := b.ownerOf(ch); o.Name != b.cfg.Self.Name {
		b.disown(s, o)
		s.unlock()
		return transport.Publication{}, notOwner(o)
	}
	now := time.Now().UnixMilli()
	if opts.Ephemeral {
		pub := transport.Publication{Epoch: s.epoch, Time: now, Data: data}
		local := b.fanout(s, pub)
		s.unlock()
		if local != nil {
			local.drain(b)
		}
		return pub, nil
	}
	b.expireDedupe(s, now)
	if key := opts.IdempotencyKey; key != "" {
		if d, ok := s.dedupe[key]; ok {
			s.unlock()
			return d.pub, nil
		}
		if p := s.pendKeys[key]; p != nil {
			// The first publication with this key is in flight: its outcome
			// is this one's.
			s.unlock()
			return b.await(ctx, ch, p)
		}
	}
	p := b.enqueue(s, transport.Publication{Offset: s.next + 1, Epoch: s.epoch, Time: now, Data: data}, opts.IdempotencyKey)
	s.unlock()
	return b.await(ctx, ch, p)
}

func (b *Broker) expireDedupe(s *chanState, now int64) {
	cutoff := now - b.cfg.DedupeWindow.Milliseconds()
	i := 0
	for i < len(s.dedupeOrder) && s.dedupeOrder[i].at < cutoff {
		if d, ok := s.dedupe[s.dedupeOrder[i].key]; ok && d.at == s.dedupeOrder[i].at {
			delete(s.dedupe, d.key)
		}
		i++
	}
	if i > 0 {
		s.dedupeOrder = append(s.dedupeOrder[:0], s.dedupeOrder[i:]...)
	}
}

// fanout sends pub to every interested node in the channel's order; s is
// locked. The local copy is queued, not handled, so the handler never runs
// under the channel lock; the caller drains the returned localChan after
// unlocking.
func (b *Broker) fanout(s *chanState, pub transport.Publication) *localChan {
	var local *localChan
	var msg []byte
	for n := range s.interest {
		if n == b.cfg.Self.Name {
			if lc := b.localFor(s.name, false); lc != nil && lc.push(b, pub) {
				local = lc
			}
			continue
		}
		if msg == nil {
			msg = enc(make([]byte, 0, 32+len(s.name)+len(pub.Epoch)+len(pub.Data))).byte1(kindDelivery).str(s.name).pub(pub)
		}
		b.deliverTo(n, s.name, msg)
	}
	return local
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
			msg = enc(make([]byte, 0, 2+len(ch))).byte1(kindNotice).str(ch)
		}
		b.sendTo(p, msg)
	}
}

// serveOwner handles the requests addressed to a channel's owner.
func (b *Broker) serveOwner(ctx context.Context, from string, op byte, ch string, d *dec) ([]byte, error) {
	switch op {
	case opPublish:
		flags, key, data := d.byte1(), d.str(), d.bytes()
		if d.err != nil {
			return nil, d.err
		}
		pub, err := b.ownerPublish(ctx, ch, data, transport.PublishOptions{Ephemeral: flags&flagEphemeral != 0, IdempotencyKey: key})
		if err != nil {
			return nil, err
		}
		return enc(nil).pub(pub), nil
	case opReplicate, opReplicateBatch, opSnapshot, opState:
		return b.serveReplica(ctx, from, op, ch, d)
	}

	// The rest only read or touch membership of the channel.
	var req transport.HistoryRequest
	var since *transport.StreamPosition
	var user string
	var users []string
	switch op {
	case opHistory, opSubscribe:
		if d.bool1() {
			p := d.pos()
			since = &p
		}
		if op == opHistory {
			req = transport.HistoryRequest{Since: since, Limit: int(d.u())}
		}
	case opPresenceAdd, opPresenceRemove:
		user = d.str()
	case opPresenceSet:
		for n := d.count(); n > 0 && d.err == nil; n-- {
			users = append(users, d.str())
		}
	case opUnsubscribe, opPresenceQuery:
	default:
		return nil, fmt.Errorf("%w: unknown op %d", errBadFrame, op)
	}
	if d.err != nil {
		return nil, d.err
	}
	s, err := b.acquireOwned(ctx, ch)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	switch op {
	case opHistory:
		res := b.history(s, req)
		e := enc(nil).pos(res.Latest).bool1(res.Recovered).u(uint64(len(res.Publications)))
		for _, p := range res.Publications {
			e = e.pub(p)
		}
		return e, nil
	case opSubscribe:
		b.unsee(from)
		s.interest[from] = struct{}{}
		if since != nil && since.Epoch == s.epoch && since.Offset > s.offset {
			// The subscriber saw offsets this stream does not have: the
			// stream was rebuilt from an incomplete copy. Reusing those
			// offsets would make it drop new data as duplicates, so the
			// stream starts over in a new epoch.
			b.log.Warn("subscriber ahead of stream, starting new epoch", "channel", ch, "node", from, "seen", since.Offset, "have", s.offset)
			b.abandon(s, fmt.Errorf("%w: stream of %s restarted", transport.ErrUnavailable, ch))
			if err := b.newEpoch(ctx, s); err != nil {
				return nil, err
			}
		}
		e := enc(nil).pos(transport.StreamPosition{Offset: s.offset, Epoch: s.epoch})
		var pubs []transport.Publication
		if since != nil {
			if since.Epoch == s.epoch {
				pubs = b.history(s, transport.HistoryRequest{Since: since}).Publications
			} else {
				pubs = s.hist.all(b.minTime())
			}
		}
		e = e.u(uint64(len(pubs)))
		for _, p := range pubs {
			e = e.pub(p)
		}
		return e, nil
	case opUnsubscribe:
		delete(s.interest, from)
	case opPresenceAdd:
		b.unsee(from)
		addPresence(s, user, from)
	case opPresenceRemove:
		if ns := s.presence[user]; ns != nil {
			delete(ns, from)
			if len(ns) == 0 {
				delete(s.presence, user)
			}
		}
	case opPresenceSet:
		for u, ns := range s.presence {
			delete(ns, from)
			if len(ns) == 0 {
				delete(s.presence, u)
			}
		}
		if len(users) > 0 {
			b.unsee(from)
		}
		for _, u := range users {
			addPresence(s, u, from)
		}
	case opPresenceQuery:
		alive := b.aliveSet()
		e := enc(nil)
		var out []string
		var names []string
		for u, ns := range s.presence {
			names = names[:0]
			for n := range ns {
				if alive[n] {
					names = append(names, n)
				}
			}
			if len(names) > 0 {
				out = append(out, u)
				slices.Sort(names)
				e = e.str(u).u(uint64(len(names)))
				for _, n := range names {
					e = e.str(n)
				}
			}
		}
		return enc(nil).u(uint64(len(out))).append(e), nil
	}
	return nil, nil
}

func (e enc) append(p []byte) enc { return append(e, p...) }

// serveReplica handles replication traffic: copies of publications, a
// full snapshot, or a state query from a node taking ownership over.
func (b *Broker) serveReplica(ctx context.Context, from string, op byte, ch string, d *dec) ([]byte, error) {
	var pubs []transport.Publication
	var keys []string
	var snap *snapshot
	var asker transport.Peer
	switch op {
	case opReplicate:
		pubs, keys = []transport.Publication{d.pub()}, []string{d.str()}
	case opReplicateBatch:
		n := d.count()
		pubs, keys = make([]transport.Publication, 0, n), make([]string, 0, n)
		for ; n > 0 && d.err == nil; n-- {
			pubs, keys = append(pubs, d.pub()), append(keys, d.str())
		}
	case opSnapshot:
		snap = d.snapshot()
	case opState:
		asker = transport.Peer{Name: from, Addr: d.str()}
	}
	if d.err != nil {
		return nil, d.err
	}
	var s *chanState
	if op == opState {
		// Refuse a takeover while this node's own view (read afresh) says
		// it orders the channel: handing over now could leave two owners
		// if the asker's view is the stale one. The asker follows the
		// hint; once the views agree, the takeover succeeds. Decided
		// before taking the lock, so two nodes taking over at once never
		// wait on each other.
		if o := ownerIn(b.livePeers(), ch); o.Name == b.cfg.Self.Name {
			return nil, notOwner(b.cfg.Self)
		}
		// A node taking a channel over asks every peer for its copy.
		// Creating an empty state here to say "none" would leave one on
		// every node for every channel ever created (each user's DM
		// inbox among them).
		b.chMu.RLock()
		s = b.chans[ch]
		b.chMu.RUnlock()
		if s == nil {
			return enc(nil).bool1(false), nil
		}
	} else {
		s = b.chanFor(ch)
	}
	if err := s.lock(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	defer s.unlock()
	if op == opState {
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
	// A copy or snapshot: the sender orders the channel. A node that
	// orders it itself, and whose view agrees, refuses: the copy may be a
	// late one from an owner that has since handed over to this node, and
	// two nodes must not both order the channel. The sender stops
	// ordering and follows the hint.
	if s.owned {
		if o := ownerIn(b.livePeers(), ch); o.Name == b.cfg.Self.Name {
			return nil, notOwner(b.cfg.Self)
		}
		hint, _ := b.peerByName(from)
		b.disown(s, hint)
	}
	if op == opSnapshot {
		return nil, b.resetStream(ctx, s, snap)
	}
	return nil, b.applyCopies(ctx, s, pubs, keys)
}
