package mesh

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// The peer view and ranking: which nodes this node believes are alive,
// who owns and backs up each channel in that view (rendezvous hashing),
// and what the broker does when the view moves.

// peerSet is an immutable view of the membership. A view equal to the
// current one is not installed again, so pointer equality means "no
// change".
type peerSet struct {
	list  []transport.Peer // sorted by name, self included
	alive map[string]bool
	// seen holds every node this view or an earlier one listed. A node
	// may register with an owner before the owner's view lists it (it
	// has just joined); only a node seen and then gone is gone.
	seen map[string]bool
}

// refreshPeers reads Config.Peers and installs it as the current view,
// unless it equals the current one, and counts the quorum in it. It
// returns the view now in place.
func (b *Broker) refreshPeers() *peerSet {
	ps := b.installPeers()
	b.updateQuorum(ps)
	return ps
}

func (b *Broker) installPeers() *peerSet {
	var ps []transport.Peer
	if b.cfg.Peers != nil {
		ps = slices.Clone(b.cfg.Peers())
	}
	if !slices.ContainsFunc(ps, func(p transport.Peer) bool { return p.Name == b.cfg.Self.Name }) {
		ps = append(ps, b.cfg.Self)
	}
	slices.SortFunc(ps, func(a, c transport.Peer) int {
		switch {
		case a.Name < c.Name:
			return -1
		case a.Name > c.Name:
			return 1
		}
		return 0
	})
	ps = slices.CompactFunc(ps, func(a, c transport.Peer) bool { return a.Name == c.Name })
	for {
		old := b.peers.Load()
		if old != nil && slices.Equal(old.list, ps) {
			return old
		}
		set := &peerSet{list: ps, alive: make(map[string]bool, len(ps)), seen: make(map[string]bool, len(ps))}
		if old != nil {
			for n := range old.seen {
				set.seen[n] = true
			}
		}
		for _, p := range ps {
			set.alive[p.Name] = true
			set.seen[p.Name] = true
		}
		if b.peers.CompareAndSwap(old, set) {
			return set
		}
	}
}

// unsee forgets that name was listed, when name registers with this node
// while its view does not list it: the node is back (it restarted under
// the same name) before this view caught up, and its new registration
// must not be dropped as the old one's at the next membership change.
// The next view that lists it marks it seen again.
func (b *Broker) unsee(name string) {
	for {
		old := b.peers.Load()
		if old == nil || old.alive[name] || !old.seen[name] {
			return
		}
		set := &peerSet{list: old.list, alive: old.alive, seen: maps.Clone(old.seen)}
		delete(set.seen, name)
		if b.peers.CompareAndSwap(old, set) {
			return
		}
	}
}

// livePeers re-reads the membership at a decision point (taking a channel
// over, handing it over, refusing a request): the cluster's own table is
// updated as soon as gossip brings news, while PeersChanged arrives only
// after the cluster has coalesced a burst of events (up to 250 ms). A view
// that moved also wakes the membership goroutine, as PeersChanged would.
func (b *Broker) livePeers() *peerSet {
	old := b.peers.Load()
	ps := b.refreshPeers()
	if ps != old && b.started.Load() && !b.closed.Load() {
		select {
		case b.changed <- struct{}{}:
		default:
		}
	}
	return ps
}

func (b *Broker) peerList() []transport.Peer { return b.peers.Load().list }
func (b *Broker) aliveSet() map[string]bool  { return b.peers.Load().alive }

func (b *Broker) peerByName(name string) (transport.Peer, bool) {
	for _, p := range b.peerList() {
		if p.Name == name {
			return p, true
		}
	}
	return transport.Peer{}, false
}

// score is the rendezvous hash of (node, channel): FNV-1a over both
// names, finished with a 64-bit mixer so that similar names spread well.
func score(node, ch string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * prime64
	}
	h = (h ^ 0xff) * prime64
	for i := 0; i < len(ch); i++ {
		h = (h ^ uint64(ch[i])) * prime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Owner returns which of the named nodes owns channel ch: the one with
// the highest rendezvous score. Tools and tests use it to know where a
// channel lives without asking a broker.
func Owner(names []string, ch string) string {
	best, bs := "", uint64(0)
	for _, n := range names {
		if s := score(n, ch); best == "" || s > bs {
			best, bs = n, s
		}
	}
	return best
}

// ranked returns the channel's owner (highest score) and backup (second)
// in the current view.
func (b *Broker) ranked(ch string) (owner, backup transport.Peer, hasBackup bool) {
	return rankedIn(b.peers.Load(), ch)
}

func rankedIn(ps *peerSet, ch string) (owner, backup transport.Peer, hasBackup bool) {
	var s1, s2 uint64
	for i, p := range ps.list {
		s := score(p.Name, ch)
		switch {
		case i == 0 || s > s1:
			if i > 0 {
				backup, s2, hasBackup = owner, s1, true
			}
			owner, s1 = p, s
		case !hasBackup || s > s2:
			backup, s2, hasBackup = p, s, true
		}
	}
	return owner, backup, hasBackup
}

func (b *Broker) ownerOf(ch string) transport.Peer {
	o, _, _ := b.ranked(ch)
	return o
}

func ownerIn(ps *peerSet, ch string) transport.Peer {
	o, _, _ := rankedIn(ps, ch)
	return o
}

// PeersChanged re-reads Config.Peers. Call it on every membership change.
// It does not block: the view switches at once (new requests go to the
// new owners) and the broker's goroutine then closes links to departed
// nodes, stops ordering channels it no longer owns, and re-registers this
// node's subscriptions and presence with each channel's owner.
func (b *Broker) PeersChanged() {
	if b.closed.Load() {
		return
	}
	b.refreshPeers()
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *Broker) membershipLoop() {
	var retry <-chan time.Time
	recount := time.NewTicker(recountEvery(b.cfg.ForgetAfter))
	defer recount.Stop()
	for {
		full := true
		select {
		case <-b.ctx.Done():
			return
		case <-b.changed:
		case <-retry:
			full = false
		case <-recount.C:
			// Forgetting the dead is a matter of time, not of views:
			// count again (a change wakes this loop through changed).
			b.livePeers()
			continue
		}
		retry = nil
		if busy := b.onPeersChanged(full); busy {
			// A channel's lock was held (a takeover or a slow copy): go
			// over the channels again shortly rather than leave one
			// marked as owned here against the view.
			retry = time.After(100 * time.Millisecond)
		}
	}
}

// onPeersChanged applies the current view: links to departed nodes close,
// channels this node no longer owns stop being ordered here, and (when
// full) every channel used here is re-registered. It reports whether some
// channel was too busy to be updated.
func (b *Broker) onPeersChanged(full bool) (busy bool) {
	alive := b.aliveSet()
	b.linkMu.Lock()
	for name, l := range b.links {
		if !alive[name] {
			l.close()
			delete(b.links, name)
		}
	}
	b.linkMu.Unlock()

	b.chMu.RLock()
	states := make([]*chanState, 0, len(b.chans))
	for _, s := range b.chans {
		states = append(states, s)
	}
	b.chMu.RUnlock()
	for _, s := range states {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		err := s.lock(ctx)
		cancel()
		if err != nil {
			busy = true
			continue
		}
		if s.owned {
			if !b.quorate() {
				b.stopOrdering(s)
			} else if o := b.ownerOf(s.name); o.Name != b.cfg.Self.Name {
				b.disown(s, o)
			} else {
				b.dropGone(s)
			}
		}
		s.unlock()
	}

	if !full {
		return busy
	}
	b.localMu.RLock()
	names := make([]string, 0, len(b.local))
	for name := range b.local {
		names = append(names, name)
	}
	b.localMu.RUnlock()
	for _, name := range names {
		b.resync(name)
	}
	return busy
}

// peerDropped is called when a peer's connection to this node ends: the
// deliveries it was sending may have been cut, so the channels it owns and
// those it delivered last (it may have stopped owning them in this node's
// view already, as after a graceful leave) are re-registered, which
// returns anything missed.
func (b *Broker) peerDropped(name string) {
	if b.closed.Load() {
		return
	}
	b.localMu.RLock()
	var names []string
	for ch, lc := range b.local {
		lc.mu.Lock()
		from := lc.lastFrom
		lc.mu.Unlock()
		if from == name || b.ownerOf(ch).Name == name {
			names = append(names, ch)
		}
	}
	b.localMu.RUnlock()
	for _, ch := range names {
		b.resync(ch)
	}
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
