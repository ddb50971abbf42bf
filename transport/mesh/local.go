package mesh

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// maxPending bounds the out-of-order buffer of one channel. Beyond it the
// buffer is dropped and the gap is filled from the owner's history.
const maxPending = 4096

// localChan is this node's side of a channel: whether it is subscribed,
// the last position handed to the handler, publications that arrived out
// of order, and the users present here. Guarded by mu, a leaf lock; the
// handler is called with no lock held, by whichever goroutine finds the
// queue undrained (so one at a time per channel, in queue order).
type localChan struct {
	name string

	mu       sync.Mutex
	active   bool // subscribed
	known    bool // epoch/offset valid: the owner told us where the stream is
	epoch    string
	offset   uint64
	pending  map[uint64]transport.Publication
	queue    []transport.Publication // accepted, waiting for the handler
	draining bool
	syncing  bool // a resync goroutine runs
	again    bool // another resync was asked for while one ran
	users    map[string]struct{}
	usersVer uint64 // bumped on every change to users
	lastFrom string // the node whose delivery arrived last
}

// push offers a publication from the owner's stream. It returns true when
// something was queued for the handler (the caller then drains), and asks
// for a resync when it sees a gap or a new epoch.
func (lc *localChan) push(b *Broker, pub transport.Publication) bool {
	lc.mu.Lock()
	queued, resync := lc.pushLocked(pub)
	lc.mu.Unlock()
	if resync {
		b.resync(lc.name)
	}
	return queued
}

func (lc *localChan) pushLocked(pub transport.Publication) (queued, resync bool) {
	if !lc.active {
		return false, false
	}
	if pub.Offset == 0 { // ephemeral: not part of the stream
		lc.queue = append(lc.queue, pub)
		return true, false
	}
	if !lc.known {
		// The subscribe answer is still on its way; it decides what of
		// this is new.
		lc.hold(pub)
		return false, false
	}
	if pub.Epoch != lc.epoch {
		lc.hold(pub)
		return false, true
	}
	if pub.Offset <= lc.offset {
		return false, false // duplicate
	}
	if pub.Offset != lc.offset+1 {
		lc.hold(pub)
		return false, true
	}
	lc.accept(pub)
	lc.drainPending()
	return true, false
}

func (lc *localChan) hold(pub transport.Publication) {
	if len(lc.pending) >= maxPending {
		clear(lc.pending)
	}
	if lc.pending == nil {
		lc.pending = make(map[uint64]transport.Publication)
	}
	lc.pending[pub.Offset] = pub
}

func (lc *localChan) accept(pub transport.Publication) {
	lc.queue = append(lc.queue, pub)
	lc.offset = pub.Offset
}

// drainPending moves buffered publications that now continue the stream
// to the queue, and forgets those that are stale.
func (lc *localChan) drainPending() {
	for {
		p, ok := lc.pending[lc.offset+1]
		if !ok || p.Epoch != lc.epoch {
			break
		}
		delete(lc.pending, p.Offset)
		lc.accept(p)
	}
	for o, p := range lc.pending {
		if p.Epoch == lc.epoch && o <= lc.offset {
			delete(lc.pending, o)
		}
	}
}

// apply takes the owner's answer to a subscribe: the stream's latest
// position and the publications this node has not seen. sentKnown is
// whether the request carried this node's position: an answer to one that
// did not (sent while the first subscribe was still on its way) carries no
// publications, so it cannot move the position forward over a gap. It
// reports whether something was queued and whether a gap remains.
func (lc *localChan) apply(sentKnown bool, latest transport.StreamPosition, pubs []transport.Publication) (queued, gap bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if !lc.active {
		return false, false
	}
	if lc.known && !sentKnown {
		return false, latest.Epoch != lc.epoch || latest.Offset > lc.offset
	}
	n := len(lc.queue)
	epochChanged := lc.known && lc.epoch != latest.Epoch
	switch {
	case !lc.known:
		// Fresh subscription: only what is published after it is ours;
		// the hub reads older history itself.
	case epochChanged:
		// The stream was lost and started over: all of it is new here.
		lc.queue = append(lc.queue, pubs...)
	default:
		for _, p := range pubs {
			if p.Offset > lc.offset {
				lc.queue = append(lc.queue, p)
			}
		}
	}
	if !lc.known || epochChanged {
		lc.offset = latest.Offset
	} else {
		lc.offset = max(latest.Offset, lc.offset)
	}
	lc.known, lc.epoch = true, latest.Epoch
	for o, p := range lc.pending {
		if p.Epoch != lc.epoch {
			delete(lc.pending, o)
		}
	}
	lc.drainPending()
	return len(lc.queue) > n, len(lc.pending) > 0
}

// drain hands queued publications to the handler, outside the lock. Only
// one goroutine drains a channel at a time; others leave their items to it.
func (lc *localChan) drain(b *Broker) {
	lc.mu.Lock()
	if lc.draining {
		lc.mu.Unlock()
		return
	}
	lc.draining = true
	for len(lc.queue) > 0 {
		pub := lc.queue[0]
		lc.queue[0] = transport.Publication{}
		lc.queue = lc.queue[1:]
		lc.mu.Unlock()
		b.handler.HandlePublication(lc.name, pub)
		lc.mu.Lock()
	}
	lc.queue = nil
	lc.draining = false
	lc.mu.Unlock()
}

// localFor returns the channel's local state, creating it when create is
// set.
func (b *Broker) localFor(ch string, create bool) *localChan {
	b.localMu.RLock()
	lc := b.local[ch]
	b.localMu.RUnlock()
	if lc != nil || !create {
		return lc
	}
	b.localMu.Lock()
	defer b.localMu.Unlock()
	if lc = b.local[ch]; lc == nil {
		lc = &localChan{name: ch}
		b.local[ch] = lc
	}
	return lc
}

// deliver handles a delivery from a channel's owner.
func (b *Broker) deliver(from, ch string, pub transport.Publication) {
	lc := b.localFor(ch, false)
	if lc == nil {
		return
	}
	lc.mu.Lock()
	lc.lastFrom = from
	lc.mu.Unlock()
	if lc.push(b, pub) {
		lc.drain(b)
	}
}

// noticed handles a notice: re-register ch if it is used here.
func (b *Broker) noticed(ch string) {
	lc := b.localFor(ch, false)
	if lc == nil {
		return
	}
	lc.mu.Lock()
	used := lc.active || len(lc.users) > 0
	lc.mu.Unlock()
	if used {
		b.resync(ch)
	}
}

// register tells the channel's owner about this node's subscription (with
// the last position it delivered, so the owner returns what was missed)
// and about the users present here.
func (b *Broker) register(ctx context.Context, ch string) error {
	lc := b.localFor(ch, false)
	if lc == nil {
		return nil
	}
	lc.mu.Lock()
	active, known := lc.active, lc.known
	pos := transport.StreamPosition{Offset: lc.offset, Epoch: lc.epoch}
	lc.mu.Unlock()

	if active {
		e := enc(nil).bool1(known)
		if known {
			e = e.pos(pos)
		}
		body, err := b.ownerCall(ctx, opSubscribe, ch, e)
		if err != nil {
			return err
		}
		d := dec{b: body}
		latest, pubs := d.pos(), d.pubs()
		if d.err != nil {
			return d.err
		}
		queued, gap := lc.apply(known, latest, pubs)
		if queued {
			lc.drain(b)
		}
		if gap {
			b.resync(ch)
		}
	}
	// The set replaces this node's users at the owner. An add or remove
	// sent meanwhile may reach the owner before it and be undone by it,
	// so the set is sent again until the users did not change around it.
	sentVer := ^uint64(0)
	for {
		lc.mu.Lock()
		ver := lc.usersVer
		users := make([]string, 0, len(lc.users))
		for u := range lc.users {
			users = append(users, u)
		}
		lc.mu.Unlock()
		if ver == sentVer || (len(users) == 0 && sentVer == ^uint64(0) && ver == 0) {
			return nil
		}
		slices.Sort(users)
		e := enc(nil).u(uint64(len(users)))
		for _, u := range users {
			e = e.str(u)
		}
		if _, err := b.ownerCall(ctx, opPresenceSet, ch, e); err != nil {
			return err
		}
		sentVer = ver
	}
}

// resync re-registers ch with its owner in the background, retrying with
// backoff until it succeeds, the channel is no longer used here, or the
// broker closes. Concurrent requests coalesce into one more round.
func (b *Broker) resync(ch string) {
	lc := b.localFor(ch, false)
	if lc == nil {
		return
	}
	lc.mu.Lock()
	if lc.syncing {
		lc.again = true
		lc.mu.Unlock()
		return
	}
	lc.syncing = true
	lc.mu.Unlock()
	if !b.goFn(func() { b.resyncLoop(lc) }) {
		lc.mu.Lock()
		lc.syncing = false
		lc.mu.Unlock()
	}
}

func (b *Broker) resyncLoop(lc *localChan) {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.RequestTimeout)
		err := b.register(ctx, lc.name)
		cancel()
		lc.mu.Lock()
		idle := !lc.active && len(lc.users) == 0
		if err == nil || idle || b.ctx.Err() != nil {
			if err == nil && lc.again && !idle && b.ctx.Err() == nil {
				lc.again = false
				lc.mu.Unlock()
				continue
			}
			lc.syncing, lc.again = false, false
			lc.mu.Unlock()
			return
		}
		lc.again = false
		lc.mu.Unlock()
		b.log.Debug("resync failed, retrying", "channel", lc.name, "err", err, "in", backoff)
		select {
		case <-b.ctx.Done():
			lc.mu.Lock()
			lc.syncing = false
			lc.mu.Unlock()
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
