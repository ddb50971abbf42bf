package mesh

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// The owner's request handlers: one per op, each decoding its body and
// acting on the channel's state. serveRequest dispatches a request, from a
// peer's connection (inbound.go) or from this node itself (client.go), to
// its handler. The owner orders a publication here (ownerPublish), then
// the pipeline copies and confirms it (pipeline.go) and fanout delivers
// it to every subscribed node.

// serveRequest runs the handler of op for a request from node from. It is
// a switch, not a table of handlers: through a function value the
// request's decoder would escape, one allocation more per request.
func (b *Broker) serveRequest(ctx context.Context, from string, op byte, ch string, d *dec) ([]byte, error) {
	switch op {
	case opPublish:
		return b.servePublish(ctx, ch, d)
	case opHistory:
		return b.serveHistory(ctx, ch, d)
	case opSubscribe:
		return b.serveSubscribe(ctx, from, ch, d)
	case opUnsubscribe:
		return b.serveUnsubscribe(ctx, from, ch, d)
	case opPresenceAdd:
		return b.servePresenceAdd(ctx, from, ch, d)
	case opPresenceRemove:
		return b.servePresenceRemove(ctx, from, ch, d)
	case opPresenceSet:
		return b.servePresenceSet(ctx, from, ch, d)
	case opPresenceQuery:
		return b.servePresenceQuery(ctx, ch, d)
	case opSnapshot:
		return b.serveSnapshot(ctx, from, ch, d)
	case opState:
		return b.serveState(ctx, from, ch, d)
	case opReplicateBatch:
		return b.serveReplicateBatch(ctx, from, ch, d)
	}
	return nil, fmt.Errorf("%w: unknown op %d", errBadFrame, op)
}

// servePublish answers opPublish (flags key data -> publication).
func (b *Broker) servePublish(ctx context.Context, ch string, d *dec) ([]byte, error) {
	flags, key, data := d.byte1(), d.str(), d.bytes()
	if d.err != nil {
		return nil, d.err
	}
	pub, err := b.ownerPublish(ctx, ch, data, transport.PublishOptions{Ephemeral: flags&flagEphemeral != 0, IdempotencyKey: key})
	if err != nil {
		return nil, err
	}
	return enc(nil).pub(pub), nil
}

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

// lockOwned returns ch's state locked and owned by this node
// (acquireOwned), once d, the request's body, was decoded without error.
func (b *Broker) lockOwned(ctx context.Context, ch string, d *dec) (*chanState, error) {
	if d.err != nil {
		return nil, d.err
	}
	return b.acquireOwned(ctx, ch)
}

// serveHistory answers opHistory (since? limit -> latest recovered pubs).
func (b *Broker) serveHistory(ctx context.Context, ch string, d *dec) ([]byte, error) {
	var req transport.HistoryRequest
	since, ok := d.since()
	if ok {
		req.Since = &since
	}
	req.Limit = int(d.u())
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	res := b.history(s, req)
	return enc(nil).pos(res.Latest).bool1(res.Recovered).pubs(res.Publications), nil
}

// serveSubscribe answers opSubscribe (since? -> latest pubs-to-deliver):
// node from is subscribed from now on, and gets what it missed after
// since.
func (b *Broker) serveSubscribe(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	since, known := d.since()
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	b.unsee(from)
	s.interest[from] = struct{}{}
	if known && since.Epoch == s.epoch && since.Offset > s.offset {
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
	var pubs []transport.Publication
	if known {
		if since.Epoch == s.epoch {
			pubs = b.history(s, transport.HistoryRequest{Since: &since}).Publications
		} else {
			pubs = b.retained(s, b.minTime())
		}
	}
	return enc(nil).pos(transport.StreamPosition{Offset: s.offset, Epoch: s.epoch}).pubs(pubs), nil
}

// serveUnsubscribe answers opUnsubscribe: node from is no longer
// subscribed.
func (b *Broker) serveUnsubscribe(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	delete(s.interest, from)
	return nil, nil
}

// servePresenceAdd answers opPresenceAdd (user): user is present on node
// from.
func (b *Broker) servePresenceAdd(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	user := d.str()
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	b.unsee(from)
	addPresence(s, user, from)
	return nil, nil
}

// servePresenceRemove answers opPresenceRemove (user): user is no longer
// present on node from.
func (b *Broker) servePresenceRemove(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	user := d.str()
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	removePresence(s, user, from)
	return nil, nil
}

// servePresenceSet answers opPresenceSet (users): they replace the users
// present on node from.
func (b *Broker) servePresenceSet(ctx context.Context, from, ch string, d *dec) ([]byte, error) {
	var users []string
	for n := d.count(); n > 0 && d.err == nil; n-- {
		users = append(users, d.str())
	}
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
	for u := range s.presence {
		removePresence(s, u, from)
	}
	if len(users) > 0 {
		b.unsee(from)
	}
	for _, u := range users {
		addPresence(s, u, from)
	}
	return nil, nil
}

// servePresenceQuery answers opPresenceQuery (-> user nodes...): the
// users present on alive nodes.
func (b *Broker) servePresenceQuery(ctx context.Context, ch string, d *dec) ([]byte, error) {
	s, err := b.lockOwned(ctx, ch, d)
	if err != nil {
		return nil, err
	}
	defer s.unlock()
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
