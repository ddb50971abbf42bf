package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// Key authenticates node-to-node connections (HMAC-SHA256). Required,
	// at least 16 bytes; every node of the cluster uses the same key.
	Key []byte
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
	// Log, when set, keeps the streams this node orders or backs up on
	// disk: an owner or backup writes each publication to it before
	// acknowledging, and Start reads it back, so restarting every node
	// (with the same names) keeps each channel's history, epoch and next
	// offset. Give it the broker's retention settings. The broker never
	// closes it: close it after Close. Nil means memory only.
	Log transport.Log
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

	peers atomic.Pointer[peerSet]

	chMu  sync.RWMutex
	chans map[string]*chanState

	localMu sync.RWMutex
	local   map[string]*localChan

	linkMu  sync.Mutex
	links   map[string]*link
	inbound map[*inConn]struct{}

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
	if cfg.RequestTimeout < 0 || cfg.QueueBytes < 0 || cfg.DialTimeout < 0 {
		return nil, errors.New("mesh broker: negative duration or size in Config")
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Key = slices.Clone(cfg.Key)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "mesh", "node", cfg.Self.Name),
		ctx:      ctx,
		cancel:   cancel,
		chans:    make(map[string]*chanState),
		local:    make(map[string]*localChan),
		links:    make(map[string]*link),
		inbound:  make(map[*inConn]struct{}),
		nonces:   nonceCache{seen: make(map[string]int64)},
		upgrader: newUpgrader(),
		changed:  make(chan struct{}, 1),
	}
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
	b.refreshPeers()
	b.started.Store(true)
	b.goFn(b.membershipLoop)
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
	for {
		full := true
		select {
		case <-b.ctx.Done():
			return
		case <-b.changed:
		case <-retry:
			full = false
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
			if o := b.ownerOf(s.name); o.Name != b.cfg.Self.Name {
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
// unless it equals the current one. It returns the view now in place.
func (b *Broker) refreshPeers() *peerSet {
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

func (b *Broker) chanFor(ch string) *chanState {
	b.chMu.RLock()
	s := b.chans[ch]
	b.chMu.RUnlock()
	if s != nil {
		return s
	}
	b.chMu.Lock()
	defer b.chMu.Unlock()
	if s = b.chans[ch]; s == nil {
		s = newChanState(ch, b.cfg.HistorySize)
		b.chans[ch] = s
	}
	return s
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
		return b.serveOwner(ctx, b.cfg.Self.Name, op, ch, &d)
	}
	return b.linkTo(peer).call(ctx, op, ch, body)
}

// ownerCall sends a request to the channel's owner, following ownership
// while membership views converge: a node that answers "not owner" names
// the node it believes orders the channel, and the request goes there
// next (at once for the first hops, then with a short backoff). Every
// attempt, and the whole call, ends with ctx (RequestTimeout when ctx has
// no deadline). Errors wrap transport.ErrUnavailable.
func (b *Broker) ownerCall(ctx context.Context, op byte, ch string, body []byte) ([]byte, error) {
	if b.closed.Load() {
		return nil, transport.ErrClosed
	}
	if !b.started.Load() {
		return nil, fmt.Errorf("%w: mesh broker not started", transport.ErrUnavailable)
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
		resp, err := b.call(ctx, target, op, ch, body)
		if err == nil {
			return resp, nil
		}
		if b.closed.Load() {
			return nil, transport.ErrClosed
		}
		if !errors.Is(err, errNotOwner) {
			if errors.Is(err, transport.ErrUnavailable) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: owner %s of %s: %w", transport.ErrUnavailable, target.Name, ch, err)
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
				return nil, fmt.Errorf("%w: no agreed owner for %s: %w", transport.ErrUnavailable, ch, ctx.Err())
			case <-timer.C:
			}
			backoff = min(backoff*2, 200*time.Millisecond)
		}
		target = next
	}
}

// Publish implements transport.Broker. It returns once the channel's
// owner has ordered and stored the publication and copied it to the
// backup. When the owner cannot be reached the error wraps
// transport.ErrUnavailable and nothing was stored.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte, opts transport.PublishOptions) (transport.Publication, error) {
	flags := byte(0)
	if opts.Ephemeral {
		flags |= flagEphemeral
		opts.IdempotencyKey = ""
	}
	body := enc(make([]byte, 0, 16+len(opts.IdempotencyKey)+len(data))).byte1(flags).str(opts.IdempotencyKey).bytes(data)
	resp, err := b.ownerCall(ctx, opPublish, ch, body)
	if err != nil {
		return transport.Publication{}, err
	}
	d := dec{b: resp}
	pub := d.pub()
	if d.err != nil {
		return transport.Publication{}, fmt.Errorf("%w: publish: %w", transport.ErrUnavailable, d.err)
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
	res := transport.HistoryResult{Latest: d.pos(), Recovered: d.bool1()}
	if n := d.count(); n > 0 {
		res.Publications = make([]transport.Publication, 0, n)
		for ; n > 0 && d.err == nil; n-- {
			res.Publications = append(res.Publications, d.pub())
		}
	}
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
