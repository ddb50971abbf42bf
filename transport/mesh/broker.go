package mesh

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/transport"
)

// MountPath is where the web server mounts Handler. Peers dial
// MountPath + "ws" on each other's HTTP listener.
const MountPath = "/_mesh/"

// Defaults for Config.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultQueueBytes     = 8 << 20
	DefaultDialTimeout    = 3 * time.Second
)

// Config configures a mesh Broker.
type Config struct {
	// Self is this node: its name and HTTP base URL (where peers reach
	// Handler). Required.
	Self transport.Peer
	// Key authenticates node-to-node connections (HMAC-SHA256) and is
	// what each connection's frame keys are derived from. Required, at
	// least 16 bytes; every node of the cluster uses the same key.
	Key []byte
	// ClusterName is bound into every handshake and frame key: nodes of
	// clusters with another name never link, even with the same Key.
	// Empty is a name like any other (every node must agree).
	ClusterName string
	// TLS configures dialling peers whose address is https:// (wss).
	// Nil means crypto/tls's defaults: the system roots verify the
	// peer's certificate. Frames are encrypted either way.
	TLS *tls.Config
	// Peers returns the alive nodes, this one included (cluster.Alive).
	// It is read at Start, on every PeersChanged, and again whenever the
	// broker takes a channel over, hands one over or turns a request
	// away, so it must be cheap and safe for concurrent use. Nil means a
	// cluster of one.
	Peers func() []transport.Peer
	// HistorySize is how many publications a channel retains. Zero means
	// transport.DefaultHistorySize.
	HistorySize int
	// HistoryMaxAge hides retained publications older than this. Zero
	// means no age limit.
	HistoryMaxAge time.Duration
	// DedupeWindow is how long an IdempotencyKey is remembered. Zero means
	// transport.DefaultDedupeWindow.
	DedupeWindow time.Duration
	// RequestTimeout bounds a node-to-node request when the caller's
	// context has no deadline. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// QueueBytes bounds each connection's outbound queue. A peer that
	// falls this far behind is disconnected and catches up from history
	// when it reconnects. Zero means DefaultQueueBytes.
	QueueBytes int
	// DialTimeout bounds the WebSocket handshake with a peer. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Departed, when set, returns the nodes that left the cluster
	// gracefully (cluster.StateLeft): they lose their vote in the quorum
	// at once, where a node that died keeps it (see Quorum). It is read
	// with Peers, so the same rules apply. Nil means none ever leaves.
	Departed func() []string
	// MinVoters, when set, returns how many voting nodes this node counts,
	// itself included, until it has seen that many alive: a node started
	// to join a cluster (seeds, an expected size) does not have the
	// quorum alone. It is read from Start on. Nil means 1: a node is a
	// cluster of one until others join it.
	MinVoters func() int
	// ForgetAfter is how long a dead node keeps its vote before a node
	// that has the quorum with it counted forgets it. Zero means
	// DefaultForgetAfter; negative never forgets.
	ForgetAfter time.Duration
	// HistoryBudget bounds the bytes of history (message data and a
	// small overhead each) that the channels this node orders or backs
	// up retain in memory, all together. Over it, the histories of the
	// channels used least recently are evicted: with a Log they stay on
	// disk and are read back when next used; without one they are gone,
	// and a resume from before them is not recovered. Zero means no
	// bound.
	HistoryBudget int64
	// Pinned reports the channels whose history is never evicted (the
	// node's own tables). Nil pins none.
	Pinned func(channel string) bool
	// Log, when set, keeps the streams this node orders or backs up on
	// disk: an owner or backup writes each publication to it before
	// acknowledging, and Start reads it back, so restarting every node
	// (with the same names) keeps each channel's history, epoch and next
	// offset. Give it the broker's retention settings. The broker never
	// closes it: close it after Close. Nil means memory only.
	Log Log
	// RequestSeconds, when set, observes the round trip of each request
	// answered by a peer (publish, subscribe, history, presence,
	// takeover), in seconds. Nil measures nothing.
	RequestSeconds transport.Observer
	// TakeoverSeconds, when set, observes how long each takeover of a
	// channel took, in seconds. Nil measures nothing.
	TakeoverSeconds transport.Observer
	// ReplicateSeconds, when set, observes how long each batch of copies
	// (or snapshot) took from the owner sending it to the backup
	// confirming it, in seconds: how far the backup runs behind. Copies
	// that failed are not observed. Nil measures nothing.
	ReplicateSeconds transport.Observer
	// Logger receives the broker's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Broker is the embedded peer-to-peer broker. See the package doc.
type Broker struct {
	cfg Config
	log *slog.Logger

	handler transport.Handler
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	started atomic.Bool
	closed  atomic.Bool

	peers     atomic.Pointer[peerSet]
	quorum    quorumState // see quorum.go
	hasQuorum atomic.Bool // quorum.q.Has, read on every request

	chMu  sync.RWMutex
	chans map[string]*chanState

	localMu sync.RWMutex
	local   map[string]*localChan

	linkMu  sync.Mutex
	links   map[string]*link
	inbound map[*inConn]struct{}

	counts linkCounters // see Stats

	retainedBytes atomic.Int64       // what the rings retain (budget.go)
	useClock      atomic.Uint64      // orders chanState.used
	evictKick     chan struct{}      // buffered 1: the total is over budget
	junkLog       transport.LogLimit // rejected peer connections, frames failing authentication

	nonces   nonceCache
	upgrader *websocket.Upgrader // peer connections (serveHTTP)

	changed chan struct{}

	goMu    sync.Mutex // guards wg.Add against Close's Wait
	goClose bool
	wg      sync.WaitGroup
}

var (
	_ transport.Broker          = (*Broker)(nil)
	_ transport.PresenceManager = (*Broker)(nil)
)

// New validates cfg and returns a Broker that is not started.
func New(cfg Config) (*Broker, error) {
	if cfg.Self.Name == "" {
		return nil, errors.New("mesh broker: Self.Name is required")
	}
	u, err := url.Parse(cfg.Self.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("mesh broker: Self.Addr %q is not an http(s) base URL", cfg.Self.Addr)
	}
	if len(cfg.Key) < 16 {
		return nil, fmt.Errorf("mesh broker: Key must be at least 16 bytes, got %d", len(cfg.Key))
	}
	if err := transport.FillRetention("mesh broker", &cfg.HistorySize, &cfg.HistoryMaxAge, &cfg.DedupeWindow); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout < 0 || cfg.QueueBytes < 0 || cfg.DialTimeout < 0 || cfg.HistoryBudget < 0 {
		return nil, errors.New("mesh broker: negative duration or size in Config")
	}
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, DefaultRequestTimeout)
	cfg.QueueBytes = cmp.Or(cfg.QueueBytes, DefaultQueueBytes)
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, DefaultDialTimeout)
	cfg.ForgetAfter = cmp.Or(cfg.ForgetAfter, DefaultForgetAfter)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Key = slices.Clone(cfg.Key)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "mesh", "node", cfg.Self.Name),
		ctx:       ctx,
		cancel:    cancel,
		chans:     make(map[string]*chanState),
		local:     make(map[string]*localChan),
		links:     make(map[string]*link),
		inbound:   make(map[*inConn]struct{}),
		nonces:    nonceCache{seen: make(map[string]int64)},
		upgrader:  newUpgrader(),
		changed:   make(chan struct{}, 1),
		evictKick: make(chan struct{}, 1),
	}
	b.quorum.v = newVoters(cfg.Self.Name, cfg.ForgetAfter)
	b.refreshPeers()
	return b, nil
}

// Start registers h and starts the broker's membership goroutine. With a
// Config.Log it first loads every stored stream, so peers and clients are
// served only once the recovered state is in place.
func (b *Broker) Start(ctx context.Context, h transport.Handler) error {
	if h == nil {
		return errors.New("mesh broker: nil handler")
	}
	if b.closed.Load() {
		return transport.ErrClosed
	}
	if b.started.Load() {
		return errors.New("mesh broker: already started")
	}
	if err := b.loadLog(ctx); err != nil {
		return err
	}
	b.handler = h
	b.started.Store(true)
	b.refreshPeers() // the quorum's floor is known from now on
	b.goFn(b.membershipLoop)
	if b.cfg.HistoryBudget > 0 {
		b.goFn(b.evictLoop)
	}
	return nil
}

// goFn runs fn on a goroutine Close waits for; false once Close began.
func (b *Broker) goFn(fn func()) bool {
	b.goMu.Lock()
	defer b.goMu.Unlock()
	if b.goClose {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
}

// goAdd accounts for a goroutine the caller already runs (an HTTP
// handler); the caller must call b.wg.Done.
func (b *Broker) goAdd() bool {
	b.goMu.Lock()
	defer b.goMu.Unlock()
	if b.goClose {
		return false
	}
	b.wg.Add(1)
	return true
}

// Close stops the broker: connections are closed, in-flight requests fail,
// and it waits for its goroutines until ctx ends. Safe to call twice.
func (b *Broker) Close(ctx context.Context) error {
	if b.closed.Swap(true) {
		return b.wait(ctx)
	}
	b.goMu.Lock()
	b.goClose = true
	b.goMu.Unlock()
	b.cancel()
	b.linkMu.Lock()
	for _, l := range b.links {
		l.close()
	}
	for ic := range b.inbound {
		ic.close()
	}
	b.linkMu.Unlock()
	return b.wait(ctx)
}

func (b *Broker) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mesh broker: close: %w", ctx.Err())
	}
}
