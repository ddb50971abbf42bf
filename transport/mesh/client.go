package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// The RPC client: how this node asks a channel's owner to act. A request
// goes to the owner in this node's view, follows "not owner, try X"
// redirects while views converge, and travels over the link to that peer
// (link.call), whose reader matches each response to its pending request.
// The transport.Broker methods below are its callers; Publish serves
// itself directly when this node is the owner.

// result is a response as a link's reader hands it to the waiting call.
type result struct {
	status byte
	body   []byte
	msg    string
}

// call sends a request over the link and waits for its response.
func (l *link) call(ctx context.Context, op byte, ch string, body []byte) ([]byte, error) {
	l.mu.Lock()
	if time.Now().Before(l.downUntil) {
		err := l.lastErr
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %w: peer %s: %w", transport.ErrUnavailable, errPeerDown, l.peer.Name, err)
	}
	l.nextID++
	id := l.nextID
	rc := make(chan result, 1)
	l.pending[id] = rc
	l.mu.Unlock()

	msg := enc(make([]byte, 0, 16+len(ch)+len(body))).byte1(kindRequest).u(id).byte1(op).str(ch).append(body)
	if !l.q.push(msg) {
		l.forget(id)
		return nil, fmt.Errorf("%w: %w: peer %s: queue full or closed", transport.ErrUnavailable, errPeerDown, l.peer.Name)
	}
	select {
	case r := <-rc:
		switch r.status {
		case stOK:
			return r.body, nil
		case stNotOwner:
			d := dec{b: r.body}
			hint := transport.Peer{Name: d.str(), Addr: d.str()}
			if d.err != nil {
				hint = transport.Peer{}
			}
			return nil, notOwner(hint)
		case stNeedSync:
			return nil, errNeedSync
		case stBadRequest:
			return nil, fmt.Errorf("%w: peer %s: %s", errBadFrame, l.peer.Name, r.msg)
		case stLinkDown:
			return nil, fmt.Errorf("%w: %w: peer %s: %s", transport.ErrUnavailable, errPeerDown, l.peer.Name, r.msg)
		default:
			return nil, fmt.Errorf("%w: peer %s: %s", transport.ErrUnavailable, l.peer.Name, r.msg)
		}
	case <-ctx.Done():
		l.forget(id)
		return nil, fmt.Errorf("%w: peer %s: %w", transport.ErrUnavailable, l.peer.Name, ctx.Err())
	}
}

func (l *link) forget(id uint64) {
	l.mu.Lock()
	delete(l.pending, id)
	l.mu.Unlock()
}

// handleResponse is the link's reader: it hands each response to the call
// waiting for it.
func (l *link) handleResponse(msg []byte) {
	d := dec{b: msg}
	if d.byte1() != kindResponse {
		return
	}
	id, status := d.u(), d.byte1()
	r := result{status: status}
	if status != stOK {
		r.msg = d.str()
	}
	r.body = d.b
	if d.err != nil {
		return
	}
	l.mu.Lock()
	rc, ok := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	if ok {
		rc <- r
	}
}

// withTimeout applies RequestTimeout when ctx has no deadline.
func (b *Broker) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.cfg.RequestTimeout)
}

// call sends one request to peer (or serves it here when peer is this
// node) and returns the response body.
func (b *Broker) call(ctx context.Context, peer transport.Peer, op byte, ch string, body []byte) ([]byte, error) {
	if peer.Name == b.cfg.Self.Name {
		d := dec{b: body}
		return b.serveRequest(ctx, b.cfg.Self.Name, op, ch, &d)
	}
	if b.cfg.RequestSeconds == nil {
		return b.linkTo(peer).call(ctx, op, ch, body)
	}
	t0 := time.Now()
	resp, err := b.linkTo(peer).call(ctx, op, ch, body)
	if err == nil {
		b.cfg.RequestSeconds.Observe(time.Since(t0).Seconds())
	}
	return resp, err
}

// toOwner runs try against the channel's owner, following ownership
// while membership views converge: when try fails with errNotOwner, the
// hint it carries (the node the answerer believes orders the channel)
// is tried next (at once for the first hops, then with a short backoff).
// Every attempt, and the whole call, ends with ctx (RequestTimeout when
// ctx has no deadline). Errors wrap transport.ErrUnavailable.
func (b *Broker) toOwner(ctx context.Context, ch string, try func(ctx context.Context, owner transport.Peer) error) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	if !b.started.Load() {
		return fmt.Errorf("%w: mesh broker not started", transport.ErrUnavailable)
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	const freeHops = 2 // redirects followed without waiting
	backoff := 5 * time.Millisecond
	target := b.ownerOf(ch)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for hop := 0; ; hop++ {
		err := try(ctx, target)
		if err == nil {
			return nil
		}
		if b.closed.Load() {
			return transport.ErrClosed
		}
		if !errors.Is(err, errNotOwner) {
			if errors.Is(err, transport.ErrUnavailable) {
				return err
			}
			return fmt.Errorf("%w: owner %s of %s: %w", transport.ErrUnavailable, target.Name, ch, err)
		}
		next := ownerIn(b.livePeers(), ch)
		if hint, ok := hintOf(err); ok && hint.Name != target.Name {
			next = hint
		}
		if hop >= freeHops || next.Name == target.Name {
			if timer == nil {
				timer = time.NewTimer(backoff)
			} else {
				timer.Reset(backoff)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: no agreed owner for %s: %w", transport.ErrUnavailable, ch, ctx.Err())
			case <-timer.C:
			}
			backoff = min(backoff*2, 200*time.Millisecond)
		}
		target = next
	}
}

// ownerCall sends a request to the channel's owner (toOwner) and returns
// the response body.
func (b *Broker) ownerCall(ctx context.Context, op byte, ch string, body []byte) (resp []byte, err error) {
	err = b.toOwner(ctx, ch, func(ctx context.Context, owner transport.Peer) (err error) {
		resp, err = b.call(ctx, owner, op, ch, body)
		return err
	})
	return resp, err
}

// Publish implements transport.Broker. It returns once the channel's
// owner has ordered and stored the publication and copied it to the
// backup. When the owner cannot be reached the error wraps
// transport.ErrUnavailable and nothing was stored. When this node is the
// owner, the owner's logic runs here with no request encoded.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte, opts transport.PublishOptions) (transport.Publication, error) {
	if opts.Ephemeral {
		opts.IdempotencyKey = ""
	}
	var (
		pub    transport.Publication
		own    []byte // data, copied as a request would: the caller keeps its slice
		body   []byte // the request, encoded for the first remote owner
		resp   []byte
		remote bool
	)
	err := b.toOwner(ctx, ch, func(ctx context.Context, owner transport.Peer) (err error) {
		if owner.Name == b.cfg.Self.Name {
			if own == nil {
				own = append(make([]byte, 0, len(data)), data...)
			}
			remote = false
			pub, err = b.ownerPublish(ctx, ch, own, opts)
			return err
		}
		if body == nil {
			flags := byte(0)
			if opts.Ephemeral {
				flags |= flagEphemeral
			}
			body = enc(make([]byte, 0, 16+len(opts.IdempotencyKey)+len(data))).byte1(flags).str(opts.IdempotencyKey).bytes(data)
		}
		remote = true
		resp, err = b.linkTo(owner).call(ctx, opPublish, ch, body)
		return err
	})
	if err != nil {
		return transport.Publication{}, err
	}
	if remote {
		d := dec{b: resp}
		pub = d.pub()
		if d.err != nil {
			return transport.Publication{}, fmt.Errorf("%w: publish: %w", transport.ErrUnavailable, d.err)
		}
	}
	return pub, nil
}

// Subscribe implements transport.Broker.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	lc := b.localFor(ch, true)
	lc.mu.Lock()
	if lc.active && lc.known {
		lc.mu.Unlock()
		return nil
	}
	if !lc.active {
		lc.active, lc.known = true, false
		clear(lc.pending)
	}
	lc.mu.Unlock()
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	if err := b.register(ctx, ch); err != nil {
		lc.mu.Lock()
		if !lc.known {
			lc.active = false
		}
		lc.mu.Unlock()
		return err
	}
	return nil
}

// Unsubscribe implements transport.Broker. Delivery stops here at once;
// an error means the owner could not be told (it will keep sending until
// it is, and this node drops what it sends).
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	lc := b.localFor(ch, false)
	if lc == nil {
		return nil
	}
	lc.mu.Lock()
	was := lc.active
	lc.active, lc.known = false, false
	lc.pending = nil
	lc.mu.Unlock()
	if !was {
		return nil
	}
	_, err := b.ownerCall(ctx, opUnsubscribe, ch, nil)
	return err
}

// History implements transport.Broker.
func (b *Broker) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	e := enc(nil).bool1(req.Since != nil)
	if req.Since != nil {
		e = e.pos(*req.Since)
	}
	e = e.u(uint64(max(req.Limit, 0)))
	resp, err := b.ownerCall(ctx, opHistory, ch, e)
	if err != nil {
		return transport.HistoryResult{}, err
	}
	d := dec{b: resp}
	res := transport.HistoryResult{Latest: d.pos(), Recovered: d.bool1(), Publications: d.pubs()}
	if d.err != nil {
		return transport.HistoryResult{}, fmt.Errorf("%w: history: %w", transport.ErrUnavailable, d.err)
	}
	return res, nil
}

// AddPresence implements transport.PresenceManager.
func (b *Broker) AddPresence(ctx context.Context, ch, user string) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	lc := b.localFor(ch, true)
	lc.mu.Lock()
	if lc.users == nil {
		lc.users = make(map[string]struct{})
	}
	lc.users[user] = struct{}{}
	lc.usersVer++
	lc.mu.Unlock()
	_, err := b.ownerCall(ctx, opPresenceAdd, ch, enc(nil).str(user))
	return err
}

// RemovePresence implements transport.PresenceManager.
func (b *Broker) RemovePresence(ctx context.Context, ch, user string) error {
	if b.closed.Load() {
		return transport.ErrClosed
	}
	if lc := b.localFor(ch, false); lc != nil {
		lc.mu.Lock()
		delete(lc.users, user)
		lc.usersVer++
		lc.mu.Unlock()
	}
	_, err := b.ownerCall(ctx, opPresenceRemove, ch, enc(nil).str(user))
	return err
}

// Presence implements transport.PresenceManager.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string][]string, error) {
	resp, err := b.ownerCall(ctx, opPresenceQuery, ch, nil)
	if err != nil {
		return nil, err
	}
	d := dec{b: resp}
	out := make(map[string][]string)
	for n := d.count(); n > 0 && d.err == nil; n-- {
		u := d.str()
		var nodes []string
		for m := d.count(); m > 0 && d.err == nil; m-- {
			nodes = append(nodes, d.str())
		}
		out[u] = nodes
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: presence: %w", transport.ErrUnavailable, d.err)
	}
	return out, nil
}
