package chat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Defaults for Config.
const (
	DefaultQueueBytes = 1 << 20
	DefaultRateLimit  = 50
	// DefaultMinBurst is the least burst a rate-limited connection gets:
	// the contract promises bursts of at least 100 frames, and a client
	// spends one on its join before it bursts; the rest is headroom.
	DefaultMinBurst     = 110
	DefaultMaxTextBytes = 4096
	DefaultHistoryPage  = 100
	// DefaultHistoryBytes bounds the message frames of one joined.history.
	DefaultHistoryBytes = 64 << 10
	DefaultMaxRooms     = 100
	// DefaultRoomsPerHour is how many new rooms one user may create per
	// hour on one node.
	DefaultRoomsPerHour = 100
	DefaultShards       = 64
	// NoRateLimit, as Config.RateLimit, turns the per-connection frame
	// limit off (what the command line's --rate-limit 0 means); as
	// Config.RoomsPerHour, the room creation limit.
	NoRateLimit = -1
	// typingInterval is the least time between two typing notices of one
	// connection in one room; more frequent ones are dropped silently.
	typingInterval = time.Second
)

// Config configures a Hub. Zero values mean the documented defaults.
type Config struct {
	// Node is this node's name, unique in the cluster. Required.
	Node string
	// Broker carries traffic between nodes. Required; it must also
	// implement transport.PresenceManager. The hub starts it in Start;
	// closing it stays with the caller (after Shutdown).
	Broker transport.Broker
	// Nodes returns the HTTP base URLs of the cluster's alive nodes, for
	// the welcome frame. Nil means an empty list.
	Nodes func() []string
	// QueueBytes bounds each connection's outbound queue, in bytes. A
	// connection that would exceed it is closed as a slow consumer
	// (CloseSlowConsumer). Default 1 MiB.
	QueueBytes int
	// RateLimit is how many frames per second a connection may send,
	// sustained. 0 means DefaultRateLimit (50); a negative value (use
	// NoRateLimit) means no limit.
	RateLimit float64
	// RateBurst is how many frames a connection may send at once.
	// 0 means max(DefaultMinBurst, 2*RateLimit), i.e. max(110, 2N).
	RateBurst int
	// MaxTextBytes bounds the text of a message or DM. Default 4096.
	MaxTextBytes int
	// HistoryPage is how many messages joined.history holds when the
	// join does not resume (no "after", or it cannot be recovered).
	// Default 100.
	HistoryPage int
	// HistoryBytes bounds the message frames joined.history (and
	// dm_history, and History) holds, in bytes: the newest that fit, or,
	// on a resume, the oldest after the id, the rest following as
	// "message" frames (docs/protocol.md). Every HistoryBytesPerToken
	// bytes of history a connection is sent cost it one frame of its
	// rate limit. Default DefaultHistoryBytes (64 KiB).
	HistoryBytes int
	// RoomsPerHour is how many new rooms (no retained history, not
	// private) one user may create per hour on this node, in bursts of
	// as many; over it a join answers too_many_rooms. 0 means
	// DefaultRoomsPerHour; a negative value (NoRateLimit) means no limit.
	RoomsPerHour int
	// MaxRooms bounds the rooms one connection may hold. Default 100.
	MaxRooms int
	// Shards is how many shards the channel table is split into.
	// Default 64.
	Shards int
	// Revocations is the cluster's record of logged-out sessions
	// (store.Revocations): Connect closes a connection whose session it
	// reports revoked. Nil means no session is ever revoked.
	Revocations Revocations
	// Rooms is the cluster's record of private rooms (store.Rooms). Nil
	// means every room is public.
	Rooms RoomAccess
	// Users is the cluster's table of user names, where there is one
	// (accounts): a DM to a name it does not know answers no_such_user.
	// Nil means every valid name may get DMs.
	Users Users
	// IsAdmin reports whether user holds the admin role: admins may
	// join any private room and invite or remove its members, and
	// delete any message. Nil means nobody does.
	IsAdmin func(user string) bool
	// System receives the publications on "s:" channels, where the
	// node's own tables (logouts, accounts) live. Nil drops them.
	System transport.Handler
	// PublishSeconds, when set, observes how long each Publish of a
	// message or DM to the broker took, in seconds (failed ones too).
	// Nil measures nothing.
	PublishSeconds transport.Observer
	// Logger receives the hub's logs. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Revocations is what the hub needs from the record of logged-out
// sessions, which package store keeps (store.Revocations). It calls
// Hub.DisconnectSession when it learns of a logout.
type Revocations interface {
	// Revoked reports whether session id was logged out.
	Revoked(session string) bool
}

// Users is what the hub needs from the table of accounts, which package
// store keeps (store.Accounts, wrapped by the node).
type Users interface {
	// Exists reports whether user may be sent DMs: an account holds
	// the name.
	Exists(user string) bool
}

// Hub is the chat domain of one node. It is the transport.Handler of its
// broker. Create it with New, then Start it.
type Hub struct {
	node       string
	broker     transport.Broker
	presence   transport.PresenceManager
	nodes      func() []string
	queueBytes int
	rate       float64
	burst      int
	maxText    int
	page       int
	histBytes  int
	maxRooms   int
	log        *slog.Logger
	now        func() time.Time

	shards []shard

	idPrefix string
	connSeq  atomic.Uint64

	clientsMu sync.Mutex
	clients   map[*Client]struct{}
	// bySession: session id -> its clients. A slice: most sessions have
	// one or two connections, and a map per session costs far more.
	bySession map[string][]*Client
	closing   bool // guarded by clientsMu

	revocations Revocations       // or nil
	system      transport.Handler // or nil
	rooms       RoomAccess        // or nil
	admin       func(string) bool // or nil
	users       Users             // or nil

	stats          counters
	publishSeconds transport.Observer // or nil
	slow           slowLog            // the latest slow consumers (slow.go)

	senders userLimits // the server API's rate limits, per sender (api.go)

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	// posters rate-limits one-shot requests per user (oneshot.go).
	posters userLimits
	// creations limits the rooms each user creates (join.go's
	// allowCreate); roomsPerHour <= 0 turns it off.
	creations    userLimits
	roomsPerHour int

	started  atomic.Bool
	shutOnce sync.Once
	shutDone chan struct{}
}

var _ transport.Handler = (*Hub)(nil)

// New validates cfg and returns a hub that is not started yet.
func New(cfg Config) (*Hub, error) {
	if cfg.Node == "" {
		return nil, ErrNoNode
	}
	if cfg.Broker == nil {
		return nil, ErrNoBroker
	}
	pm, ok := cfg.Broker.(transport.PresenceManager)
	if !ok {
		return nil, ErrNoPresence
	}
	if cfg.QueueBytes < 0 || cfg.RateBurst < 0 || cfg.MaxTextBytes < 0 || cfg.HistoryPage < 0 ||
		cfg.HistoryBytes < 0 || cfg.MaxRooms < 0 || cfg.Shards < 0 {
		return nil, ErrNegativeConfig
	}
	if math.IsNaN(cfg.RateLimit) || math.IsInf(cfg.RateLimit, 0) {
		return nil, fmt.Errorf("chat: rate limit %v is not a number", cfg.RateLimit)
	}
	h := &Hub{
		node:           cfg.Node,
		broker:         cfg.Broker,
		presence:       pm,
		nodes:          cfg.Nodes,
		revocations:    cfg.Revocations,
		system:         cfg.System,
		rooms:          cfg.Rooms,
		admin:          cfg.IsAdmin,
		users:          cfg.Users,
		queueBytes:     orDefault(cfg.QueueBytes, DefaultQueueBytes),
		maxText:        orDefault(cfg.MaxTextBytes, DefaultMaxTextBytes),
		page:           orDefault(cfg.HistoryPage, DefaultHistoryPage),
		histBytes:      orDefault(cfg.HistoryBytes, DefaultHistoryBytes),
		roomsPerHour:   orDefault(cfg.RoomsPerHour, DefaultRoomsPerHour),
		maxRooms:       orDefault(cfg.MaxRooms, DefaultMaxRooms),
		log:            cfg.Logger,
		now:            cfg.Now,
		clients:        make(map[*Client]struct{}),
		bySession:      make(map[string][]*Client),
		shutDone:       make(chan struct{}),
		publishSeconds: cfg.PublishSeconds,
	}
	switch {
	case cfg.RateLimit == 0:
		h.rate = DefaultRateLimit
	case cfg.RateLimit > 0:
		h.rate = cfg.RateLimit
	}
	if h.rate > 0 {
		h.burst = cfg.RateBurst
		if h.burst == 0 {
			h.burst = int(math.Min(math.Max(DefaultMinBurst, math.Ceil(2*h.rate)), math.MaxInt32))
		}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.log = h.log.With("component", "chat")
	if h.now == nil {
		h.now = time.Now
	}
	if h.nodes == nil {
		h.nodes = func() []string { return nil }
	}
	h.shards = make([]shard, orDefault(cfg.Shards, DefaultShards))
	for i := range h.shards {
		h.shards[i].rooms = make(map[string]*room)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("chat: random: %w", err)
	}
	h.idPrefix = hex.EncodeToString(rnd[:])
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Node returns the node name the hub was configured with.
func (h *Hub) Node() string { return h.node }

// Start starts the broker with the hub as its handler.
func (h *Hub) Start(ctx context.Context) error {
	if !h.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	if err := h.broker.Start(ctx, h); err != nil {
		return fmt.Errorf("chat: start broker: %w", err)
	}
	return nil
}

// Shutdown disconnects every client with CloseServiceRestart (so clients
// reconnect to another node) and removes their presence. It does not
// close the broker. Safe to call twice.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.shutOnce.Do(func() {
		go func() {
			defer close(h.shutDone)
			h.clientsMu.Lock()
			h.closing = true
			clients := slices.Collect(maps.Keys(h.clients))
			h.clientsMu.Unlock()
			for _, c := range clients {
				c.disconnect(CloseServiceRestart, "service restart: reconnect to another node")
			}
			h.cancel()
			for _, c := range clients {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = c.Close(cctx)
				cancel()
			}
		}()
	})
	select {
	case <-h.shutDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connect registers a new connection of user, opened with the given
// session id (may be empty), and queues the welcome frame. It subscribes
// the user's DM inbox; an error means the broker is unavailable or the
// hub is shutting down.
func (h *Hub) Connect(ctx context.Context, user, session string) (*Client, error) {
	if !ValidName(user) {
		return nil, fmt.Errorf("chat: invalid user name %q", user)
	}
	c := &Client{
		hub:     h,
		id:      h.newConnID(),
		user:    user,
		session: session,
		limiter: limiter{rate: h.rate, burst: float64(h.burst), tokens: float64(h.burst)},
	}
	h.clientsMu.Lock()
	if h.closing {
		h.clientsMu.Unlock()
		return nil, ErrClosed
	}
	h.clients[c] = struct{}{}
	if session != "" {
		h.bySession[session] = append(h.bySession[session], c)
	}
	h.clientsMu.Unlock()
	// A logout that landed between the caller's check and the
	// registration above would otherwise miss this connection.
	if session != "" && h.revocations != nil && h.revocations.Revoked(session) {
		c.disconnect(CloseLoggedOut, "logged_out")
	}

	nodes := h.nodes()
	if nodes == nil {
		nodes = []string{}
	}
	c.enqueue(welcomeFrame(user, h.node, nodes))

	c.op.Lock()
	defer c.op.Unlock()
	r, m, err := h.addInbox(ctx, c)
	if err != nil {
		c.cleaned = true
		c.disconnect(CloseInternal, "unavailable")
		h.unregister(c)
		return nil, err
	}
	c.inbox, c.inboxMember = r, m
	return c, nil
}

// newConnID returns a connection id unique in the cluster.
func (h *Hub) newConnID() string {
	return h.idPrefix + "." + strconv.FormatUint(h.connSeq.Add(1), 36)
}

// inboxWait bounds how long Connect waits for the user's DM inbox.
const inboxWait = 5 * time.Second

// unavailableWait bounds how long a client's request waits, retrying,
// while the broker answers ErrUnavailable.
const unavailableWait = 3 * time.Second

// addInbox subscribes c to its user's DM inbox. When the inbox's node has
// just failed, the broker refuses until the cluster has declared it dead
// and another node took over (seconds); the connection waits for that
// rather than being refused, because a client refused by a live node
// backs off and comes back later than the cluster recovers.
func (h *Hub) addInbox(ctx context.Context, c *Client) (r *room, m *member, err error) {
	err = h.patiently(ctx, c, inboxWait, func(ctx context.Context) error {
		r, m, err = h.addMember(ctx, c, inboxPrefix+c.user)
		return err
	})
	return r, m, err
}

// patiently runs op, and runs it again while it fails with
// ErrUnavailable, for at most wait. A node that has just failed makes its
// rooms and inboxes refuse until the cluster declares it dead and another
// node takes them over (about two seconds); waiting here serves the
// request as soon as that happens, where a refusal would send the client
// into back-off. After one such wait runs out, the connection's next
// requests for a second fail at once instead of each waiting in turn. c
// is nil for a request of the server API, which has no connection to
// remember that on: each of its requests waits.
func (h *Hub) patiently(ctx context.Context, c *Client, wait time.Duration, op func(context.Context) error) error {
	now := h.now()
	if c != nil && now.Before(c.impatientUntil) {
		return op(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	delay := 25 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil || !errors.Is(err, transport.ErrUnavailable) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-h.ctx.Done():
		case <-t.C:
			delay = min(2*delay, 400*time.Millisecond)
			continue
		}
		t.Stop()
		if c != nil {
			c.impatientUntil = h.now().Add(time.Second)
		}
		return err
	}
}

func (h *Hub) unregister(c *Client) {
	h.clientsMu.Lock()
	delete(h.clients, c)
	if set := h.bySession[c.session]; set != nil {
		set = slices.DeleteFunc(set, func(o *Client) bool { return o == c })
		if len(set) == 0 {
			delete(h.bySession, c.session)
		} else {
			h.bySession[c.session] = set
		}
	}
	h.clientsMu.Unlock()
}

// DisconnectSession closes every connection opened with session id,
// with CloseLoggedOut (the web layer sends the close frame). The
// revocation record calls it when it learns of a logout; it never blocks.
func (h *Hub) DisconnectSession(id string) {
	h.clientsMu.Lock()
	hit := slices.Clone(h.bySession[id])
	h.clientsMu.Unlock()
	for _, c := range hit {
		c.disconnect(CloseLoggedOut, "logged_out")
	}
}

// CloseUser closes every connection of user on this node with code
// (CloseBanned, CloseLoggedOut) and reason. The account table calls it
// when it learns of a ban or of "log out everywhere"; it never blocks.
func (h *Hub) CloseUser(user string, code int, reason string) {
	h.clientsMu.Lock()
	var hit []*Client
	for c := range h.clients {
		if c.user == user {
			hit = append(hit, c)
		}
	}
	h.clientsMu.Unlock()
	for _, c := range hit {
		c.disconnect(code, reason)
	}
}

// Clients returns how many connections the hub holds.
func (h *Hub) Clients() int {
	h.clientsMu.Lock()
	defer h.clientsMu.Unlock()
	return len(h.clients)
}

// HandlePublication implements transport.Handler. It decodes the payload
// once and queues the encoded frame on every local member; it never
// blocks. Publications on "s:" channels go to Config.Revocations.
func (h *Hub) HandlePublication(channel string, pub transport.Publication) {
	if strings.HasPrefix(channel, systemPrefix) {
		if h.system != nil {
			h.system.HandlePublication(channel, pub)
		}
		return
	}
	r := h.lookup(channel)
	if r == nil {
		return
	}
	ev, ok := decodeEvent(pub.Data)
	if !ok {
		return
	}
	r.deliver(h, ev, pub)
}

// NodeGone tells the hub that a node left the cluster or died: users who
// were online only there go offline in every local room.
func (h *Hub) NodeGone(name string) {
	if name == h.node {
		return
	}
	h.eachRoom(func(r *room) { r.nodeGone(h, name) })
}

// eachRoom calls fn for every chat room (not inbox) in the channel
// table, with no lock held.
func (h *Hub) eachRoom(fn func(*room)) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		rooms := make([]*room, 0, len(s.rooms))
		for _, r := range s.rooms {
			if r.kind == roomKindRoom {
				rooms = append(rooms, r)
			}
		}
		s.mu.Unlock()
		for _, r := range rooms {
			fn(r)
		}
	}
}

// shard is one slice of the channel table.
type shard struct {
	mu    sync.Mutex
	rooms map[string]*room
}

func (h *Hub) shardOf(channel string) *shard {
	// FNV-1a, inline so that hashing allocates nothing.
	var x uint32 = 2166136261
	for i := 0; i < len(channel); i++ {
		x ^= uint32(channel[i])
		x *= 16777619
	}
	return &h.shards[x%uint32(len(h.shards))]
}

func (h *Hub) lookup(channel string) *room {
	s := h.shardOf(channel)
	s.mu.Lock()
	r := s.rooms[channel]
	s.mu.Unlock()
	return r
}

// acquire returns the channel's room, creating it, and takes a reference
// that keeps it in the table until release.
func (h *Hub) acquire(channel string) *room {
	s := h.shardOf(channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[channel]
	if r == nil {
		r = newRoom(channel)
		s.rooms[channel] = r
	}
	r.refs++
	return r
}

// release drops a reference; the last one unsubscribes the node from
// the channel and removes the room from the table.
func (h *Hub) release(ctx context.Context, r *room) {
	s := h.shardOf(r.channel)
	s.mu.Lock()
	r.refs--
	s.mu.Unlock()

	r.ctl.Lock()
	defer r.ctl.Unlock()
	s.mu.Lock()
	idle := r.refs == 0
	s.mu.Unlock()
	if idle && r.subscribed {
		if err := h.broker.Unsubscribe(ctx, r.channel); err != nil {
			h.log.Debug("unsubscribe", "channel", r.channel, "err", err)
		}
		r.subscribed = false
	}
	s.mu.Lock()
	if r.refs == 0 && !r.subscribed && s.rooms[r.channel] == r {
		delete(s.rooms, r.channel)
	}
	s.mu.Unlock()
}

// ensureSubscribed subscribes the node to the room's channel once and,
// for rooms, seeds the cluster-wide presence from the broker.
func (h *Hub) ensureSubscribed(ctx context.Context, r *room) error {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	if r.subscribed {
		return nil
	}
	if err := h.broker.Subscribe(ctx, r.channel); err != nil {
		return err
	}
	r.subscribed = true
	if r.kind != roomKindRoom {
		return nil
	}
	pres, err := h.presence.Presence(ctx, r.channel)
	if err != nil {
		h.log.Warn("reading presence", "channel", r.channel, "err", err)
		return nil
	}
	r.seed(h.node, pres)
	return nil
}
