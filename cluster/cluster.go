package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a node's membership state as this node sees it.
type State string

// Node states. Suspect is part of the public vocabulary (/api/cluster) but
// memberlist does not report suspicion through its event delegate, so this
// package only ever reports alive, dead and left.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Node is one member of the cluster.
type Node struct {
	Name  string
	HTTP  string // advertised HTTP base URL
	State State
	Addr  string // gossip host:port
	Data  []byte // broker data from NodeMeta; do not modify
}

// EventKind says what happened to a node.
type EventKind int

// Event kinds.
const (
	EventJoin   EventKind = iota + 1 // node became alive (joined or came back)
	EventUpdate                      // an alive node changed its metadata
	EventLeave                       // node left gracefully
	EventDead                        // node was declared dead
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	}
	return "unknown(" + strconv.Itoa(int(k)) + ")"
}

// Event is one coalesced membership change.
type Event struct {
	Kind EventKind
	Node Node
}

// Defaults for Config.
const (
	DefaultRejoinInterval = 10 * time.Second
	DefaultDeadRetention  = 10 * time.Minute
	// KeySize is the required gossip key length (AES-256).
	KeySize = 32
	// MaxLabelSize is the longest Label memberlist accepts.
	MaxLabelSize = 255
)

// Config configures a Cluster.
type Config struct {
	// Name is the node name, unique in the cluster. Required.
	Name string
	// BindAddr is the gossip "host:port" (TCP and UDP). Port 0 picks a free
	// port; BindAddr() reports it after Start. Empty means ":7946".
	BindAddr string
	// AdvertiseAddr is the "host:port" other nodes use to reach this one.
	// Empty means memberlist's choice (the bind address, or a private IP
	// when bound to all interfaces).
	AdvertiseAddr string
	// HTTPURL is this node's HTTP base URL, advertised in NodeMeta.
	HTTPURL string
	// Data is opaque broker data advertised in NodeMeta; may be nil.
	Data []byte
	// Join lists "host:port" seeds. Empty means a cluster of one until
	// another node joins this one. A seed that is this node itself is
	// ignored, so every node can be given the same list.
	Join []string
	// PeersFile, when set, is where the node keeps the gossip addresses
	// of the other nodes it knows (a small JSON file, rewritten when
	// membership changes). At Start they are join targets along with
	// Join, so a restarted node finds the cluster it left even when it
	// is given no seeds, or only seeds that are down. Empty: none kept.
	PeersFile string
	// Key encrypts and authenticates gossip. Required, KeySize bytes.
	Key []byte
	// Label is the cluster's name: memberlist puts it on every packet
	// and stream (and authenticates it with Key), and drops whatever
	// carries another, so two clusters on one network never merge, even
	// with the same Key. Empty is a label like any other. At most
	// MaxLabelSize bytes.
	Label string
	// RejoinInterval is how often the node re-joins its seeds and the
	// peers it recently saw die or leave, so that a healed partition
	// merges and a restarted node is found again.
	// Zero means DefaultRejoinInterval; negative disables re-joining.
	RejoinInterval time.Duration
	// DeadRetention is how long dead and left nodes stay listed by Members
	// (and are re-join targets). Zero means DefaultDeadRetention.
	DeadRetention time.Duration
	// Logger receives the cluster's logs and memberlist's. Nil means
	// slog.Default().
	Logger *slog.Logger

	// tune lets tests adjust the memberlist config; nil in production.
	tune func(*memberlist.Config)
}

// Cluster is one node's view of the gossip cluster.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	meta []byte

	ml      *memberlist.Memberlist // set by Start, then read-only
	mlog    *logWriter             // memberlist's log, rate-limited
	seeds   []string               // Config.Join less this node; set by Start
	known   []string               // from PeersFile, less seeds and this node; set by Start
	started atomic.Bool
	joined  atomic.Bool
	left    atomic.Bool

	mu      sync.Mutex
	members map[string]*member
	leaving map[string]time.Time // leave intents received, by node name
	gen     uint64

	subMu sync.Mutex
	subs  []func(Event)

	signal   chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	shutMu   sync.Mutex // serialises Leave and Shutdown around memberlist
	shut     bool
}

type member struct {
	node    Node
	gen     uint64 // bumped each time the node (re)joins
	changed time.Time
}

// New validates cfg and returns a Cluster that is not yet running.
func New(cfg Config) (*Cluster, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: Name is required")
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("cluster: Key must be %d bytes, got %d", KeySize, len(cfg.Key))
	}
	if len(cfg.Label) > MaxLabelSize {
		return nil, fmt.Errorf("cluster: Label is %d bytes, limit %d", len(cfg.Label), MaxLabelSize)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = ":7946"
	}
	if _, _, err := splitHostPort(cfg.BindAddr); err != nil {
		return nil, fmt.Errorf("cluster: BindAddr: %w", err)
	}
	if cfg.AdvertiseAddr != "" {
		if _, _, err := splitHostPort(cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("cluster: AdvertiseAddr: %w", err)
		}
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if cfg.DeadRetention <= 0 {
		cfg.DeadRetention = DefaultDeadRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Join = slices.Clone(cfg.Join)
	cfg.Key = slices.Clone(cfg.Key)
	meta, _ := NodeMeta{Name: cfg.Name, HTTP: cfg.HTTPURL, Data: cfg.Data}.MarshalBinary()
	if len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: node metadata is %d bytes, limit %d", len(meta), memberlist.MetaMaxSize)
	}
	return &Cluster{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "cluster"),
		mlog:    &logWriter{log: cfg.Logger},
		meta:    meta,
		members: make(map[string]*member),
		leaving: make(map[string]time.Time),
		signal:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}, nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// memberlistConfig derives the memberlist settings. Failure detection is
// tuned for a small LAN cluster; docs/cluster.md explains the numbers.
func (c *Cluster) memberlistConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.Name
	host, port, _ := splitHostPort(c.cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if c.cfg.AdvertiseAddr != "" {
		ah, ap, _ := splitHostPort(c.cfg.AdvertiseAddr)
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	mc.SecretKey = c.cfg.Key
	mc.Label = c.cfg.Label
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true

	// A dead node's rooms and DM inboxes refuse sends until it is declared
	// dead, so detection time is the users' outage: see docs/cluster.md.
	mc.ProbeInterval = 400 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.SuspicionMult = 2
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 15 * time.Second
	mc.TCPTimeout = 5 * time.Second

	mc.Delegate = delegate{c}
	mc.Events = eventDelegate{c}
	mc.Logger = log.New(c.mlog, "", 0)
	if c.cfg.tune != nil {
		c.cfg.tune(mc)
	}
	return mc
}

// Start brings up memberlist and returns once it listens. Joining the seeds
// continues in the background until one answers.
func (c *Cluster) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.shutMu.Lock()
	defer c.shutMu.Unlock()
	if c.shut {
		return ErrShutdown
	}
	if c.started.Load() {
		return errors.New("cluster: already started")
	}
	ml, err := memberlist.Create(c.memberlistConfig())
	if err != nil {
		return fmt.Errorf("cluster: start memberlist: %w", err)
	}
	c.ml = ml
	bindHost, _, _ := splitHostPort(c.cfg.BindAddr)
	port := int(ml.LocalNode().Port)
	c.seeds = otherSeeds(ctx, c.cfg.Join, bindHost, port)
	kept, err := readPeers(c.cfg.PeersFile)
	if err != nil {
		// Damaged: the node still has its seeds.
		c.log.Warn("ignoring the file of known peers", "file", c.cfg.PeersFile, "err", err)
	}
	for _, p := range otherSeeds(ctx, kept, bindHost, port) {
		if !slices.Contains(c.seeds, p) {
			c.known = append(c.known, p)
		}
	}
	c.started.Store(true)
	c.goFn(c.coalesce)
	if len(c.seeds) == 0 {
		c.joined.Store(true)
	}
	if len(c.seeds)+len(c.known) > 0 {
		c.goFn(c.joinSeeds)
	}
	if c.cfg.RejoinInterval > 0 {
		c.goFn(c.rejoinLoop)
	}
	c.log.Info("gossip up", "name", c.cfg.Name, "addr", c.BindAddr(), "seeds", c.seeds, "known_peers", c.known)
	return nil
}

// goFn runs fn on a goroutine that Shutdown waits for.
func (c *Cluster) goFn(fn func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// BindAddr returns the gossip address other nodes can join, with the
// actual port when Config.BindAddr asked for port 0. Empty before Start.
func (c *Cluster) BindAddr() string {
	if !c.started.Load() {
		return ""
	}
	n := c.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// joinSeeds tries the seeds and the peers kept from an earlier run with
// capped exponential backoff until one answers or the cluster stops.
// Without seeds the node is a cluster of one meanwhile, and only says so
// at debug level: the peers it knew may be gone for good.
func (c *Cluster) joinSeeds() {
	targets := append(slices.Clone(c.seeds), c.known...)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := c.ml.Join(targets)
		if n > 0 {
			c.joined.Store(true)
			c.log.Info("joined cluster", "seeds_answered", n, "attempts", attempt)
			return
		}
		lvl := slog.LevelDebug
		if attempt%10 == 1 && len(c.seeds) > 0 {
			lvl = slog.LevelWarn
		}
		c.log.Log(context.Background(), lvl, "join failed, will retry", "seeds", c.seeds, "known_peers", c.known, "attempt", attempt, "err", err)
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// rejoinLoop periodically contacts seeds and recently dead or departed
// peers. A node that left gracefully is tried too: when it comes back
// (a restart, perhaps with no seeds of its own), this is how the cluster
// finds it again instead of leaving it a cluster of one. A join
// with an already-connected node is one push/pull exchange, so this is
// cheap; with a node on the far side of a healed partition it merges the
// two member lists and lets the node refute its death.
func (c *Cluster) rejoinLoop() {
	t := time.NewTicker(c.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.reap()
		targets := c.rejoinTargets()
		if len(targets) == 0 || c.left.Load() {
			continue
		}
		if n, _ := c.ml.Join(targets); n > 0 && !c.joined.Load() {
			c.joined.Store(true)
			c.log.Info("joined cluster on re-join", "answered", n)
		}
	}
}

func (c *Cluster) rejoinTargets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var targets []string
	for _, m := range c.members {
		if (m.node.State == StateDead || m.node.State == StateLeft) && m.node.Addr != "" {
			targets = append(targets, m.node.Addr)
		}
	}
	// Seeds only matter while something may be missing: when we never
	// joined or when someone is dead or gone. A healthy cluster does not
	// hammer its seeds.
	if len(targets) > 0 || !c.joined.Load() {
		targets = append(targets, c.seeds...)
		targets = append(targets, c.known...)
	}
	return targets
}

// reap forgets dead and left nodes older than DeadRetention.
func (c *Cluster) reap() {
	cutoff := time.Now().Add(-c.cfg.DeadRetention)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, m := range c.members {
		if (m.node.State == StateDead || m.node.State == StateLeft) && m.changed.Before(cutoff) {
			delete(c.members, name)
		}
	}
	for name, t := range c.leaving {
		if time.Since(t) > leaveIntentTTL {
			delete(c.leaving, name)
		}
	}
}

// Subscribe registers fn to receive membership events. fn is called from
// the cluster's event goroutine, one event at a time, in order; it must
// not block for long. Subscribers registered before Start see every event,
// including the join of the local node and of the members found on join.
func (c *Cluster) Subscribe(fn func(Event)) {
	c.subMu.Lock()
	c.subs = append(c.subs, fn)
	c.subMu.Unlock()
}

// GossipProblems counts the warnings and errors memberlist reported, most
// of them about packets from outside (junk on the gossip port, a node
// with another key). They are logged at most a few times a second.
func (c *Cluster) GossipProblems() uint64 { return c.mlog.problems.Load() }

// HealthScore is memberlist's awareness of this node's own health: 0 is
// healthy, higher means it has been missing probes (its network or CPU
// lags the cluster). It is 0 before Start.
func (c *Cluster) HealthScore() int {
	if c.ml == nil {
		return 0
	}
	return c.ml.GetHealthScore()
}

// Members returns every known node, including recently dead and left ones,
// sorted by name.
func (c *Cluster) Members() []Node {
	c.mu.Lock()
	out := make([]Node, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m.node)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Node) int { return cmpString(a.Name, b.Name) })
	return out
}

// Alive returns the alive nodes (this one included), sorted by name. The
// node translates them for the brokers (their name and HTTP URL).
func (c *Cluster) Alive() []Node {
	c.mu.Lock()
	out := make([]Node, 0, len(c.members))
	for _, m := range c.members {
		if m.node.State == StateAlive {
			out = append(out, m.node)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Node) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LocalNode returns this node as the cluster sees it.
func (c *Cluster) LocalNode() Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.members[c.cfg.Name]; ok {
		return m.node
	}
	return Node{Name: c.cfg.Name, HTTP: c.cfg.HTTPURL, State: StateAlive, Data: c.cfg.Data}
}

// Seeds returns the seeds other than this node (Config.Join less the
// entries naming this node itself); nil before Start.
func (c *Cluster) Seeds() []string {
	if !c.started.Load() {
		return nil
	}
	return slices.Clone(c.seeds)
}

// ExpectsPeers reports whether the node was given seeds other than itself:
// such a node is part of a larger cluster, and alone it is split off.
func (c *Cluster) ExpectsPeers() bool { return len(c.seeds) > 0 }

// Joined reports whether the node is part of a cluster: true when it was
// started without seeds (or with itself as the only one), or once a join
// succeeded. It turns false on Leave.
func (c *Cluster) Joined() bool {
	return c.joined.Load() && !c.left.Load()
}

// Leave tells the cluster this node is going away, so peers mark it "left"
// at once instead of waiting for failure detection. It waits for the
// broadcast until ctx ends (at most 5s without a deadline). The node keeps
// running until Shutdown.
func (c *Cluster) Leave(ctx context.Context) error {
	c.shutMu.Lock()
	defer c.shutMu.Unlock()
	if c.shut {
		return ErrShutdown
	}
	if !c.started.Load() {
		return ErrNotStarted
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c.left.Store(true)
	// memberlist reports a graceful leave and a death through the same
	// NotifyLeave callback, without saying which; tell every peer first so
	// they can tell them apart (as serf does with its leave intent).
	intent := append([]byte{msgLeaveIntent}, c.cfg.Name...)
	for _, n := range c.ml.Members() {
		if n.Name == c.cfg.Name {
			continue
		}
		if err := c.ml.SendReliable(n, intent); err != nil {
			c.log.Debug("leave intent not delivered", "node", n.Name, "err", err)
		}
	}
	if err := c.ml.Leave(max(timeout, time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip without telling peers (they will declare this node
// dead unless Leave was called first) and waits for the cluster's
// goroutines until ctx ends. Safe to call twice.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.shutMu.Lock()
	first := !c.shut
	c.shut = true
	var err error
	if first && c.started.Load() {
		if e := c.ml.Shutdown(); e != nil {
			err = fmt.Errorf("cluster: shutdown memberlist: %w", e)
		}
	}
	c.shutMu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })

	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("cluster: shutdown: %w", ctx.Err()))
	}
	return err
}

// observe records a memberlist notification. It runs inside memberlist
// callbacks, so it only touches the table and pokes the coalescer.
func (c *Cluster) observe(n *memberlist.Node, st State) {
	node := Node{
		Name:  n.Name,
		State: st,
		Addr:  net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
	}
	var meta NodeMeta
	if err := meta.UnmarshalBinary(n.Meta); err == nil {
		node.HTTP, node.Data = meta.HTTP, meta.Data
	}
	c.mu.Lock()
	if st == StateDead {
		if t, ok := c.leaving[n.Name]; ok && time.Since(t) < leaveIntentTTL {
			st = StateLeft
			node.State = st
		}
	}
	if st == StateAlive {
		delete(c.leaving, n.Name)
	}
	m, ok := c.members[n.Name]
	if !ok {
		m = &member{}
		c.members[n.Name] = m
	}
	if st == StateAlive && (!ok || m.node.State != StateAlive) {
		c.gen++
		m.gen = c.gen
	}
	m.node = node
	m.changed = time.Now()
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default: // a wake-up is already pending; the diff will see this change
	}
}

// Coalescing windows: an event burst (a join that learns many members, a
// partition) is reported once it has been quiet for coalesceQuiet, and at
// the latest coalesceMax after its first change.
const (
	coalesceQuiet = 50 * time.Millisecond
	coalesceMax   = 250 * time.Millisecond
)

// coalesce reports membership changes to subscribers as the difference
// between the member table and what was last reported, serf-style: a node
// that flapped within one window is reported in its final state only,
// and a notification can never be lost to a full channel.
func (c *Cluster) coalesce() {
	reported := make(map[string]member)
	var saved []string // the peers last written to PeersFile
	for {
		select {
		case <-c.stop:
			return
		case <-c.signal:
		}
		quiet := time.NewTimer(coalesceQuiet)
		deadline := time.NewTimer(coalesceMax)
	wait:
		for {
			select {
			case <-c.stop:
				quiet.Stop()
				deadline.Stop()
				return
			case <-c.signal:
				quiet.Reset(coalesceQuiet)
			case <-quiet.C:
				break wait
			case <-deadline.C:
				break wait
			}
		}
		quiet.Stop()
		deadline.Stop()
		c.emit(c.diff(reported))
		c.savePeers(&saved)
	}
}

// diff computes the events that bring reported up to date, and updates it.
func (c *Cluster) diff(reported map[string]member) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var evs []Event
	for name, m := range c.members {
		old, seen := reported[name]
		reported[name] = *m
		switch {
		case !seen:
			if k := kindFor(m.node.State); k != 0 {
				evs = append(evs, Event{Kind: k, Node: m.node})
			}
		case old.gen != m.gen && old.node.State == StateAlive && m.node.State == StateAlive:
			// Died and came back within one window: its state was lost.
			evs = append(evs, Event{Kind: EventDead, Node: old.node}, Event{Kind: EventJoin, Node: m.node})
		case old.node.State != m.node.State:
			if k := kindFor(m.node.State); k != 0 {
				evs = append(evs, Event{Kind: k, Node: m.node})
			}
		case old.node.HTTP != m.node.HTTP || string(old.node.Data) != string(m.node.Data) || old.node.Addr != m.node.Addr:
			evs = append(evs, Event{Kind: EventUpdate, Node: m.node})
		}
	}
	for name := range reported {
		if _, ok := c.members[name]; !ok {
			delete(reported, name) // reaped: already reported dead or left
		}
	}
	slices.SortFunc(evs, func(a, b Event) int { return cmpString(a.Node.Name, b.Node.Name) })
	return evs
}

func kindFor(s State) EventKind {
	switch s {
	case StateAlive:
		return EventJoin
	case StateDead:
		return EventDead
	case StateLeft:
		return EventLeave
	}
	return 0
}

func (c *Cluster) emit(evs []Event) {
	if len(evs) == 0 {
		return
	}
	c.subMu.Lock()
	subs := slices.Clone(c.subs)
	c.subMu.Unlock()
	for _, ev := range evs {
		c.log.Info("member "+ev.Kind.String(), "node", ev.Node.Name, "http", ev.Node.HTTP)
		for _, fn := range subs {
			fn(ev)
		}
	}
}

type eventDelegate struct{ c *Cluster }

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.c.observe(n, StateAlive) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) { d.c.observe(n, StateAlive) }

// NotifyLeave cannot tell leave from death (memberlist does not fill in
// Node.State); observe consults the leave intents.
func (d eventDelegate) NotifyLeave(n *memberlist.Node) { d.c.observe(n, StateDead) }

// User message types carried over memberlist's reliable channel.
const msgLeaveIntent byte = 1

// leaveIntentTTL bounds how long a leave intent turns a death into "left".
const leaveIntentTTL = time.Minute

// noteLeaving records a peer's leave intent. If its death was already
// seen, the state is corrected to left.
func (c *Cluster) noteLeaving(name string) {
	c.mu.Lock()
	c.leaving[name] = time.Now()
	m, ok := c.members[name]
	changed := ok && m.node.State == StateDead
	if changed {
		m.node.State = StateLeft
		m.changed = time.Now()
	}
	c.mu.Unlock()
	if changed {
		select {
		case c.signal <- struct{}{}:
		default:
		}
	}
}

// delegate supplies node metadata and receives leave intents.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.c.meta) > limit {
		return nil // New checked MetaMaxSize; a smaller limit is memberlist's call
	}
	return d.c.meta
}
func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == msgLeaveIntent {
		d.c.noteLeaving(string(b[1:]))
	}
}
func (delegate) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (delegate) LocalState(bool) []byte            { return nil }
func (delegate) MergeRemoteState(_ []byte, _ bool) {}

var (
	_ memberlist.Delegate      = delegate{}
	_ memberlist.EventDelegate = eventDelegate{}
)
