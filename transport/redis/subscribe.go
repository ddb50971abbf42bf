package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/transport"
)

// subState is one subscribed channel. Its position fields belong to the
// receive goroutine alone.
type subState struct {
	channel string

	// floor is the channel's position read just after Subscribe was
	// confirmed (guarded by Broker.mu). It lets a reconnect that happens
	// before any stored publication arrived still fill what it missed.
	floor *transport.StreamPosition

	known  bool   // a stored publication has been delivered since Subscribe
	epoch  string // epoch of the last stored publication delivered
	offset uint64 // its offset
	// gap is set when publications after offset are known to exist but
	// history could not be read to deliver them: the receive loop tries
	// again soon rather than deliver past the gap.
	gap bool
}

// Subscribe subscribes the PubSub connection to ch and returns once Redis
// has confirmed, so publications ordered after Subscribe returns are
// delivered.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	name := b.pubName(ch)

	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return transport.ErrClosed
	case !b.started:
		b.mu.Unlock()
		return ErrNotStarted
	}
	if _, ok := b.subs[name]; ok {
		b.mu.Unlock()
		return nil
	}
	b.subs[name] = &subState{channel: ch}
	confirmed := make(chan struct{})
	b.waiters[name] = append(b.waiters[name], confirmed)
	b.mu.Unlock()

	err := b.pubsub.Subscribe(ctx, name)
	if err == nil {
		wait, cancel := context.WithTimeout(ctx, subscribeTimeout)
		select {
		case <-confirmed:
		case <-wait.Done():
			err = fmt.Errorf("no confirmation: %w", wait.Err())
		case <-b.ctx.Done():
			err = transport.ErrClosed
		}
		cancel()
	}
	if err == nil {
		b.readFloor(ctx, name)
		return nil
	}

	// Undo, so that go-redis does not resubscribe a channel the caller
	// believes it is not subscribed to.
	b.mu.Lock()
	delete(b.subs, name)
	delete(b.waiters, name)
	b.mu.Unlock()
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	_ = b.pubsub.Unsubscribe(uctx, name)
	cancel()
	if errors.Is(err, transport.ErrClosed) {
		return err
	}
	return unavailable("subscribe", err)
}

// Unsubscribe stops delivery of ch. It succeeds while Redis is down: the
// channel is dropped from the subscriptions go-redis restores on
// reconnect, and stray messages for it are ignored.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	name := b.pubName(ch)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return transport.ErrClosed
	}
	_, ok := b.subs[name]
	delete(b.subs, name)
	b.mu.Unlock()
	if !ok {
		return nil
	}
	if err := b.pubsub.Unsubscribe(ctx, name); err != nil {
		b.log.Debug("unsubscribe while disconnected", "channel", ch, "err", err)
	}
	return nil
}

// receiveLoop reads the PubSub connection until Close. It is the only
// goroutine that calls the handler.
func (b *Broker) receiveLoop() {
	backoff := time.Duration(0)
	down := false
	for {
		wait := receiveTimeout
		if len(b.gaps) > 0 {
			wait = gapRetry
		}
		msg, err := b.pubsub.ReceiveTimeout(b.ctx, wait)
		if b.ctx.Err() != nil {
			return
		}
		b.fillGaps()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if wait != receiveTimeout {
					continue // woke up to retry the gaps
				}
				// Silence: prove the connection alive. A dead one fails
				// the next read and go-redis reconnects.
				_ = b.pubsub.Ping(b.ctx)
				continue
			}
			if !down {
				b.log.Warn("redis pub/sub connection lost; reconnecting", "err", err)
				down = true
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), maxBackoff)
			if !b.sleep(backoff) {
				return
			}
			continue
		}
		if down {
			b.log.Info("redis pub/sub connection restored")
			down = false
		}
		backoff = 0

		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				b.subscribed(m.Channel)
			}
		case *goredis.Message:
			b.received(m)
		}
	}
}

// subscribed handles Redis's confirmation of a SUBSCRIBE: it releases the
// Subscribe call waiting for it or, when go-redis resubscribed after a
// reconnect, fills what was published while the connection was down.
func (b *Broker) subscribed(name string) {
	b.mu.Lock()
	for _, w := range b.waiters[name] {
		close(w)
	}
	delete(b.waiters, name)
	st, h := b.subs[name], b.handler
	var floor *transport.StreamPosition
	if st != nil {
		floor = st.floor
	}
	b.mu.Unlock()
	if st == nil {
		return
	}
	if !st.known && floor != nil {
		st.known, st.epoch, st.offset = true, floor.Epoch, floor.Offset
	}
	if st.known {
		b.fill(st, h)
	}
}

// readFloor records the channel's latest position as the subscription's
// floor. Best effort: without it, only a reconnect before the first stored
// publication goes unfilled.
func (b *Broker) readFloor(ctx context.Context, name string) {
	b.mu.Lock()
	st := b.subs[name]
	b.mu.Unlock()
	if st == nil {
		return
	}
	vals, err := b.client.HMGet(ctx, b.metaKey(st.channel), "epoch", "offset").Result()
	if err != nil || len(vals) != 2 {
		return
	}
	epoch, _ := vals[0].(string)
	offStr, _ := vals[1].(string)
	off, _ := strconv.ParseUint(offStr, 10, 64)
	b.mu.Lock()
	st.floor = &transport.StreamPosition{Offset: off, Epoch: epoch}
	b.mu.Unlock()
}

func (b *Broker) received(m *goredis.Message) {
	b.mu.Lock()
	st, h := b.subs[m.Channel], b.handler
	b.mu.Unlock()
	if st == nil {
		return // unsubscribed meanwhile
	}
	pub, err := decodeMessage(m.Payload)
	if err != nil {
		b.log.Warn("dropping undecodable publication", "channel", st.channel, "err", err)
		return
	}
	if pub.Offset == 0 {
		h.HandlePublication(st.channel, pub)
		return
	}
	if !st.known {
		// The first stored publication since Subscribe sets the position;
		// what came before is the hub's to load from history.
		st.known, st.epoch, st.offset = true, pub.Epoch, pub.Offset
		h.HandlePublication(st.channel, pub)
		return
	}
	if pub.Epoch != st.epoch {
		// The stream was created anew (Redis lost it): start over in the
		// new epoch, filling from its beginning if need be.
		st.epoch, st.offset = pub.Epoch, 0
	}
	if pub.Offset <= st.offset {
		return // already delivered from history
	}
	if pub.Offset > st.offset+1 {
		if !b.fill(st, h) {
			// History is unreachable (Redis just came back, say): hold
			// the position and fill the whole gap, this publication
			// included, once it answers.
			return
		}
		if pub.Epoch != st.epoch || pub.Offset <= st.offset {
			return
		}
		if pub.Offset > st.offset+1 {
			b.log.Warn("delivering past a gap that history no longer holds",
				"channel", st.channel, "after", st.offset, "offset", pub.Offset)
		}
	}
	st.offset = pub.Offset
	h.HandlePublication(st.channel, pub)
}

// fill delivers, from history, the stored publications after st's
// position. When history no longer reaches back that far, or the stream
// has a new epoch, it delivers what is retained and logs the loss: the
// hub sees the offset jump.
//
// It reports false when history could not be read within fillTimeout;
// the channel is then marked for the receive loop to try again.
func (b *Broker) fill(st *subState, h transport.Handler) bool {
	ctx, cancel := context.WithTimeout(b.ctx, fillTimeout)
	defer cancel()
	var res transport.HistoryResult
	var err error
	for delay := 25 * time.Millisecond; ; delay = min(2*delay, 400*time.Millisecond) {
		res, err = b.History(ctx, st.channel, transport.HistoryRequest{
			Since: &transport.StreamPosition{Offset: st.offset, Epoch: st.epoch},
		})
		if err == nil || !b.sleepCtx(ctx, delay) {
			break
		}
	}
	if err != nil {
		b.log.Warn("cannot fill delivery gap from history yet", "channel", st.channel, "err", err)
		st.gap = true
		b.gaps[st] = struct{}{}
		return false
	}
	if st.gap {
		st.gap = false
		delete(b.gaps, st)
	}
	if !res.Recovered {
		// An empty epoch means the channel had no stream when this node
		// started watching it: everything in the current one is new to it.
		if st.epoch != "" && res.Latest != (transport.StreamPosition{Offset: st.offset, Epoch: st.epoch}) {
			b.log.Warn("publications lost: history does not reach back far enough",
				"channel", st.channel, "epoch", st.epoch, "offset", st.offset, "latest", res.Latest.Offset)
		}
		if res.Latest.Epoch != st.epoch {
			st.epoch, st.offset = res.Latest.Epoch, 0
		}
	}
	filled := 0
	for _, p := range res.Publications {
		if p.Epoch != st.epoch || p.Offset <= st.offset {
			continue
		}
		st.offset = p.Offset
		h.HandlePublication(st.channel, p)
		filled++
	}
	if filled > 0 {
		b.log.Debug("filled delivery gap from history", "channel", st.channel, "publications", filled)
	}
	return true
}

// fillGaps retries the fills that found history unreachable, for the
// channels still subscribed.
func (b *Broker) fillGaps() {
	if len(b.gaps) == 0 {
		return
	}
	b.mu.Lock()
	h := b.handler
	var todo []*subState
	for st := range b.gaps {
		if b.subs[st.channel] == st {
			todo = append(todo, st)
		} else {
			delete(b.gaps, st)
		}
	}
	b.mu.Unlock()
	for _, st := range todo {
		b.fill(st, h)
	}
}

// sleepCtx waits d, or less when ctx ends; it reports whether it waited.
func (b *Broker) sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
