package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/transport"
)

// Config configures a Broker.
type Config struct {
	// URL of the Redis server, e.g. redis://127.0.0.1:6379/0. Required.
	URL string
	// Node is this node's name, recorded with its presence entries. Zero
	// means the host name plus a random suffix.
	Node string
	// HistorySize is how many publications a channel retains. Zero means
	// transport.DefaultHistorySize; negative is an error.
	HistorySize int
	// HistoryMaxAge drops retained publications older than this. Zero
	// means no age limit.
	HistoryMaxAge time.Duration
	// DedupeWindow is how long an IdempotencyKey is remembered. Zero means
	// transport.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// Alive returns the names of the cluster's alive nodes, this one
	// included; Presence reports only users on those nodes. Nil trusts
	// every node.
	Alive func() []string
	// KeyPrefix starts every key and pub/sub channel name the broker uses.
	// Zero means "meshchat:". Clusters sharing one Redis need distinct
	// prefixes: pub/sub ignores the database number.
	KeyPrefix string
	// Hook, when set, is added to the broker's client, e.g. a
	// CommandHook for the node's metrics. Nil adds none.
	Hook goredis.Hook
	// Logger receives connection state changes. Nil discards.
	Logger *slog.Logger
}

const (
	defaultKeyPrefix = "meshchat:"
	// pingTimeout caps Ping, so readiness checks answer quickly.
	pingTimeout = time.Second
	// subscribeTimeout caps the wait for Redis to confirm a SUBSCRIBE.
	subscribeTimeout = 5 * time.Second
	// fillTimeout caps one history read that fills a delivery gap.
	fillTimeout = 5 * time.Second
	// gapRetry is how soon the receive loop retries a fill that found
	// history unreachable.
	gapRetry = 200 * time.Millisecond
	// receiveTimeout is how long the PubSub connection may stay silent
	// before the receive goroutine pings it.
	receiveTimeout = 30 * time.Second
	// maxBackoff caps the pause between reconnect attempts.
	maxBackoff = 2 * time.Second
)

// Broker is a Redis-backed transport.Broker, transport.PresenceManager and
// transport.Pinger.
type Broker struct {
	cfg         Config
	log         *slog.Logger
	client      *goredis.Client
	pubsub      *goredis.PubSub
	incarnation string // random per Broker: tells this run's presence from a previous run's

	ctx    context.Context // cancelled by Close; parent of background work
	cancel context.CancelFunc
	wg     sync.WaitGroup

	subMu sync.Mutex // serialises Subscribe/Unsubscribe; before mu

	mu      sync.Mutex
	handler transport.Handler
	started bool
	closed  bool
	subs    map[string]*subState       // by pub/sub channel name
	waiters map[string][]chan struct{} // SUBSCRIBE confirmations awaited, by pub/sub channel name

	// gaps are the subscriptions whose fill from history failed; owned
	// by the receive goroutine.
	gaps map[*subState]struct{}
}

var (
	_ transport.Broker          = (*Broker)(nil)
	_ transport.PresenceManager = (*Broker)(nil)
	_ transport.Pinger          = (*Broker)(nil)
)

// New validates cfg, fills defaults and creates the client. It does not
// contact Redis.
func New(cfg Config) (*Broker, error) {
	if cfg.URL == "" {
		return nil, ErrNoURL
	}
	opt, err := goredis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis broker: bad URL: %w", err)
	}
	if err := transport.FillRetention("redis broker", &cfg.HistorySize, &cfg.HistoryMaxAge, &cfg.DedupeWindow); err != nil {
		return nil, err
	}
	if cfg.HistoryMaxAge > 0 && cfg.HistoryMaxAge < time.Millisecond {
		return nil, fmt.Errorf("redis broker: HistoryMaxAge %v below 1ms", cfg.HistoryMaxAge)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = defaultKeyPrefix
	}
	if cfg.Node == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "node"
		}
		cfg.Node = host + "-" + randomHex(3)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// No automatic retries: a retried publish script whose first reply was
	// lost would store the publication twice. Callers retry, with an
	// IdempotencyKey when duplicates matter.
	opt.MaxRetries = -1

	ctx, cancel := context.WithCancel(context.Background())
	client := goredis.NewClient(opt)
	if cfg.Hook != nil {
		client.AddHook(cfg.Hook)
	}
	return &Broker{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "redis-broker", "node", cfg.Node),
		client:      client,
		pubsub:      client.Subscribe(ctx), // no channels yet: does not connect
		incarnation: randomHex(8),
		ctx:         ctx,
		cancel:      cancel,
		subs:        make(map[string]*subState),
		waiters:     make(map[string][]chan struct{}),
		gaps:        make(map[*subState]struct{}),
	}, nil
}

// Node returns the broker's node name.
func (b *Broker) Node() string { return b.cfg.Node }

// Start registers h, clears presence entries a previous run of this node
// left behind and starts the receive goroutine. It succeeds while Redis is
// down: the broker connects when Redis comes back (Ping tells readiness).
func (b *Broker) Start(ctx context.Context, h transport.Handler) error {
	if h == nil {
		return ErrNoHandler
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return transport.ErrClosed
	case b.started:
		b.mu.Unlock()
		return ErrStarted
	}
	b.handler, b.started = h, true
	b.mu.Unlock()

	if err := b.cleanPresence(ctx, "stale"); err != nil {
		b.log.Warn("clearing stale presence failed; retrying in the background", "err", err)
		b.wg.Go(b.cleanStaleLoop)
	}
	b.wg.Go(b.receiveLoop)
	return nil
}

// Ping checks that Redis answers, within at most one second.
func (b *Broker) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close removes this node's presence (best effort), stops the receive
// goroutine and closes the connections. Safe to call twice.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()

	if started {
		if err := b.cleanPresence(ctx, "own"); err != nil {
			b.log.Warn("removing presence on close failed", "err", err)
		}
	}
	b.cancel()
	_ = b.pubsub.Close()

	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("redis broker: close: %w", ctx.Err())
	}
	if cerr := b.client.Close(); cerr != nil && err == nil && !errors.Is(cerr, goredis.ErrClosed) {
		err = fmt.Errorf("redis broker: close: %w", cerr)
	}
	return err
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// unavailable wraps a Redis failure so callers can match
// transport.ErrUnavailable and still see the cause.
func unavailable(op string, err error) error {
	return fmt.Errorf("redis broker: %s: %w: %w", op, transport.ErrUnavailable, err)
}

// sleep waits d or until the broker closes; it reports whether the broker
// is still open.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(buf)
}
