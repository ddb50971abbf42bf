package inproc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Config configures a Broker. The zero value is a usable single-node
// broker.
type Config struct {
	// HistorySize is how many publications a channel retains. Zero means
	// transport.DefaultHistorySize; negative is an error. Brokers sharing
	// a Network should agree: the publishing broker's size applies.
	HistorySize int
	// HistoryMaxAge drops retained publications older than this. Zero
	// means no age limit.
	HistoryMaxAge time.Duration
	// DedupeWindow is how long an IdempotencyKey is remembered. Zero means
	// transport.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// Node is this broker's node name, reported by Presence. Zero means
	// "inproc". It must be unique among the open brokers of a Network.
	Node string
	// Network, when set, joins the broker to an in-memory cluster shared
	// with other brokers. Nil means a private network: a cluster of one.
	Network *Network
}

// Broker is an in-process transport.Broker and transport.PresenceManager.
type Broker struct {
	cfg  Config
	node string
	net  *Network

	mu       sync.Mutex
	handler  transport.Handler
	subs     map[string]*channel
	closed   bool
	inflight sync.WaitGroup // handler calls in progress
}

var (
	_ transport.Broker          = (*Broker)(nil)
	_ transport.PresenceManager = (*Broker)(nil)
)

// New validates cfg, fills defaults and returns a broker joined to its
// Network. Call Start before use.
func New(cfg Config) (*Broker, error) {
	if err := transport.FillRetention("inproc broker", &cfg.HistorySize, &cfg.HistoryMaxAge, &cfg.DedupeWindow); err != nil {
		return nil, err
	}
	if cfg.Node == "" {
		cfg.Node = "inproc"
	}
	if cfg.Network == nil {
		cfg.Network = NewNetwork()
	}
	b := &Broker{cfg: cfg, node: cfg.Node, net: cfg.Network, subs: make(map[string]*channel)}
	if err := b.net.register(b); err != nil {
		return nil, fmt.Errorf("%w: %q", err, cfg.Node)
	}
	return b, nil
}

// Node returns the broker's node name.
func (b *Broker) Node() string { return b.node }

// Start registers h. Publications arriving before Start are not delivered
// to this broker.
func (b *Broker) Start(ctx context.Context, h transport.Handler) error {
	if h == nil {
		return ErrNoHandler
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return transport.ErrClosed
	case b.handler != nil:
		return ErrStarted
	}
	b.handler = h
	return nil
}

func (b *Broker) checkOpen(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return transport.ErrClosed
	}
	return ctx.Err()
}

// Publish orders and stores the publication under the channel's lock, then
// delivers it (see the package doc for who delivers).
func (b *Broker) Publish(ctx context.Context, ch string, data []byte, opts transport.PublishOptions) (transport.Publication, error) {
	if err := b.checkOpen(ctx); err != nil {
		return transport.Publication{}, err
	}
	c := b.net.channel(ch)
	now := time.Now()
	pub := transport.Publication{Time: now.UnixMilli(), Data: slices.Clone(data)}
	if pub.Data == nil {
		pub.Data = []byte{}
	}

	c.mu.Lock()
	if !opts.Ephemeral {
		if opts.IdempotencyKey != "" {
			c.expireDedupe(now)
			if prev, ok := c.dedupe[opts.IdempotencyKey]; ok {
				c.mu.Unlock()
				return prev, nil
			}
		}
		c.offset++
		pub.Offset, pub.Epoch = c.offset, c.epoch
		c.history = append(c.history, pub)
		c.trim(b.cfg.HistorySize, b.cutoff(now))
		if opts.IdempotencyKey != "" {
			c.dedupe[opts.IdempotencyKey] = pub
			c.dedupeOrder = append(c.dedupeOrder, dedupeRef{opts.IdempotencyKey, now.Add(b.cfg.DedupeWindow)})
		}
	}
	queued := len(c.subs) > 0
	if queued {
		c.pending = append(c.pending, pub)
	}
	c.mu.Unlock()

	if queued {
		c.deliver()
	}
	return pub, nil
}

// cutoff is the oldest publication time still retained, in Unix ms.
func (b *Broker) cutoff(now time.Time) int64 {
	if b.cfg.HistoryMaxAge <= 0 {
		return 0
	}
	return now.Add(-b.cfg.HistoryMaxAge).UnixMilli()
}

// handle calls the handler unless the broker is closed or not started.
func (b *Broker) handle(ch string, pub transport.Publication) {
	b.mu.Lock()
	h := b.handler
	if b.closed || h == nil {
		b.mu.Unlock()
		return
	}
	b.inflight.Add(1)
	b.mu.Unlock()
	defer b.inflight.Done()
	h.HandlePublication(ch, pub)
}

// Subscribe makes this broker receive ch's publications.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := b.net.channel(ch)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return transport.ErrClosed
	}
	b.subs[ch] = c
	c.mu.Lock()
	c.subs[b] = struct{}{}
	c.mu.Unlock()
	return nil
}

// Unsubscribe stops delivery of ch to this broker. A delivery already
// under way may still arrive.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return transport.ErrClosed
	}
	c := b.subs[ch]
	if c == nil {
		return nil
	}
	delete(b.subs, ch)
	c.mu.Lock()
	delete(c.subs, b)
	c.mu.Unlock()
	return nil
}

// History returns part of ch's retained history.
func (b *Broker) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	if err := b.checkOpen(ctx); err != nil {
		return transport.HistoryResult{}, err
	}
	if req.Limit < 0 {
		return transport.HistoryResult{}, errors.New("inproc broker: negative history limit")
	}
	c := b.net.channel(ch)
	cutoff := b.cutoff(time.Now())

	c.mu.Lock()
	defer c.mu.Unlock()
	res := transport.HistoryResult{Latest: transport.StreamPosition{Offset: c.offset, Epoch: c.epoch}}
	// Retained: the tail of history not older than the age limit. Times
	// never decrease along the history, so the fresh part is a suffix.
	kept := c.history[sort.Search(len(c.history), func(i int) bool { return c.history[i].Time >= cutoff }):]

	if s := req.Since; s != nil && s.Epoch == c.epoch && s.Offset <= c.offset {
		if s.Offset == c.offset {
			res.Recovered = true
			return res, nil
		}
		// Offsets in kept are contiguous, so the publication after Since
		// sits at a computable index if it is still retained.
		if len(kept) > 0 && kept[0].Offset <= s.Offset+1 {
			rest := kept[s.Offset+1-kept[0].Offset:]
			if req.Limit > 0 && len(rest) > req.Limit {
				rest = rest[:req.Limit]
			}
			res.Publications = slices.Clone(rest)
			res.Recovered = true
			return res, nil
		}
	}
	if req.Limit > 0 && len(kept) > req.Limit {
		kept = kept[len(kept)-req.Limit:]
	}
	res.Publications = slices.Clone(kept)
	return res, nil
}

// AddPresence records user as present in ch on this node.
func (b *Broker) AddPresence(ctx context.Context, ch, user string) error {
	if err := b.checkOpen(ctx); err != nil {
		return err
	}
	b.net.addPresence(ch, user, b.node)
	return nil
}

// RemovePresence removes user's presence in ch on this node.
func (b *Broker) RemovePresence(ctx context.Context, ch, user string) error {
	if err := b.checkOpen(ctx); err != nil {
		return err
	}
	b.net.removePresence(ch, user, b.node)
	return nil
}

// Presence returns the users present in ch on the network's open brokers.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string][]string, error) {
	if err := b.checkOpen(ctx); err != nil {
		return nil, err
	}
	return b.net.presenceOf(ch), nil
}

// Close unsubscribes everything, removes this node's presence from the
// network and waits for handler calls under way. Safe to call twice; must
// not be called from a handler.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	subs, first := b.subs, !b.closed
	b.closed, b.subs = true, nil
	b.mu.Unlock()
	if !first {
		return nil
	}

	for _, c := range subs {
		c.mu.Lock()
		delete(c.subs, b)
		c.mu.Unlock()
	}
	b.net.unregister(b)

	done := make(chan struct{})
	go func() {
		b.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("inproc broker: close: %w", ctx.Err())
	}
}
