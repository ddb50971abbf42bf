package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/sessions"
	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/mesh"
	"github.com/meshchat/meshchat/transport/redis"
	"github.com/meshchat/meshchat/web"
)

// defaultShutdownTimeout bounds a graceful stop when Config leaves it zero.
const defaultShutdownTimeout = 20 * time.Second

// Node is one running meshchat node: gossip membership, a broker (mesh or
// redis), the chat hub, the session store and the HTTP server, wired
// together from a Config. Several Nodes can run in one process.
//
// Concurrency: Start is called once; Stop and Kill may be called from any
// goroutine, more than once, and the first one wins. Accessors are safe
// once Start has returned.
type Node struct {
	cfg  Config
	keys keys
	log  *slog.Logger

	// Set by Start, then read-only.
	ln       *closeNotifyListener
	url      string
	name     string
	cluster  *cluster.Cluster
	broker   transport.Broker
	mesh     *mesh.Broker // nil with the redis broker
	history  *mesh.Bolt   // on-disk history log (--data, mesh only), or nil
	rdb      *goredis.Client
	sessions sessions.Store
	hub      *chat.Hub
	web      *web.Server
	srv      *http.Server
	debug    *debugServer // --debug-addr, or nil

	// seen is the membership as last handed to the broker and hub (alive
	// names), written by onClusterEvent on the cluster's event goroutine.
	seenMu sync.Mutex
	seen   map[string]bool

	started  atomic.Bool
	stopping atomic.Bool
	synced   atomic.Bool // the first membership view reached broker and hub
	served   chan error  // receives Serve's error if it fails on its own
	serveWG  sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// NewNode validates cfg and derives the node's keys. It does no I/O: Start
// binds the listeners.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	secret := cfg.Secret
	if secret == "" {
		cfg.Logger.Warn("INSECURE: no --secret (MESHCHAT_SECRET) given: using the public default secret; " +
			"anyone can forge sessions and join this cluster. Set a long random secret shared by all nodes.")
		secret = DefaultSecret
	}
	k, err := deriveKeys(secret)
	if err != nil {
		return nil, err
	}
	if cfg.DataDir != "" && cfg.Broker != "mesh" {
		cfg.Logger.Warn("--data is ignored with --broker redis: Redis keeps the history", "dir", cfg.DataDir)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	return &Node{cfg: cfg, keys: k, log: cfg.Logger, served: make(chan error, 1), seen: map[string]bool{}}, nil
}

// Name is the node's name in the cluster.
func (n *Node) Name() string { return n.name }

// URL is the node's advertised HTTP base URL.
func (n *Node) URL() string { return n.url }

// HTTPAddr is the address the HTTP listener is bound to.
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// GossipAddr is the gossip address other nodes can --join.
func (n *Node) GossipAddr() string { return n.cluster.BindAddr() }

// DebugAddr is the profiler's listen address, or "" without --debug-addr.
func (n *Node) DebugAddr() string {
	if n.debug == nil {
		return ""
	}
	return n.debug.Addr()
}

// Cluster exposes membership, for the demo and tests.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Done receives the HTTP server's error if it stops on its own; it is
// closed once the node has stopped.
func (n *Node) Done() <-chan error { return n.served }

func (n *Node) shutdownTimeout() time.Duration { return n.cfg.ShutdownTimeout }

// Start binds the HTTP listener and gossip, wires every part and starts
// serving. It returns once the node accepts connections; joining the
// seeds continues in the background (see /readyz). On error, everything
// already started is stopped.
func (n *Node) Start(ctx context.Context) (err error) {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("node: already started")
	}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = n.Kill(sctx)
		}
	}()

	// The HTTP listener comes first: its real port goes into the node
	// name and the advertised URL that gossip carries.
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node: listen http: %w", err)
	}
	n.ln = &closeNotifyListener{Listener: ln, closed: make(chan struct{})}
	if n.cfg.DebugAddr != "" {
		if n.debug, err = startDebug(n.cfg.DebugAddr, n.log); err != nil {
			return err
		}
	}
	n.url = n.cfg.AdvertiseHTTP
	if n.url == "" {
		if n.url, err = advertiseURL(ln.Addr().String(), os.Hostname, net.LookupHost); err != nil {
			return fmt.Errorf("node: advertise url: %w", err)
		}
	}
	gossipAddr := n.cfg.GossipAddr
	n.name = n.cfg.Name
	if n.name == "" {
		if gossipAddr, err = pinGossipPort(gossipAddr); err != nil {
			return fmt.Errorf("node: gossip port: %w", err)
		}
		host, _ := os.Hostname()
		n.name = defaultName(host, portOf(ln.Addr().String()), portOf(gossipAddr))
	}
	log := n.log
	if n.cfg.TagLogs {
		log = log.With("self", n.name)
		n.log = log
	}

	n.cluster, err = cluster.New(cluster.Config{
		Name:     n.name,
		BindAddr: gossipAddr,
		HTTPURL:  n.url,
		Join:     n.cfg.Join,
		Key:      n.keys.Gossip,
		Logger:   log,
	})
	if err != nil {
		return err
	}

	if n.cfg.RedisURL != "" {
		opts, err := goredis.ParseURL(n.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("node: --redis: %w", err)
		}
		n.rdb = goredis.NewClient(opts)
	}

	switch n.cfg.Broker {
	case "mesh":
		mc := mesh.Config{
			Self:          transport.Peer{Name: n.name, Addr: n.url},
			Key:           n.keys.Mesh,
			Peers:         n.cluster.Alive,
			HistorySize:   n.cfg.History,
			HistoryMaxAge: n.cfg.HistoryAge,
			Logger:        log,
		}
		if n.cfg.DataDir != "" {
			// Same retention as the broker's ring (docs/storage.md).
			n.history, err = mesh.OpenBolt(filepath.Join(n.cfg.DataDir, "history.db"), mesh.BoltOptions{
				HistorySize:   n.cfg.History,
				HistoryMaxAge: n.cfg.HistoryAge,
			})
			if err != nil {
				return fmt.Errorf("node: --data: %w", err)
			}
			mc.Log = n.history
		}
		mb, err := mesh.New(mc)
		if err != nil {
			return err
		}
		n.mesh, n.broker = mb, mb
	case "redis":
		rb, err := redis.New(redis.Config{
			URL:           n.cfg.RedisURL,
			Node:          n.name,
			HistorySize:   n.cfg.History,
			HistoryMaxAge: n.cfg.HistoryAge,
			Alive:         n.aliveNames,
			Logger:        log,
		})
		if err != nil {
			return err
		}
		n.broker = rb
	default:
		return fmt.Errorf("node: unknown broker %q", n.cfg.Broker)
	}

	rate := n.cfg.RateLimit
	if rate == 0 {
		rate = chat.NoRateLimit // the contract's "0 turns the limit off"
	}
	n.hub, err = chat.New(chat.Config{
		Node:       n.name,
		Broker:     n.broker,
		Nodes:      n.aliveURLs,
		QueueBytes: n.cfg.QueueBytes,
		RateLimit:  rate,
		RateBurst:  rateBurst(n.cfg.RateLimit),
		// Logout snapshots must come more often than history expires.
		HistoryMaxAge: n.cfg.HistoryAge,
		Logger:        log,
	})
	if err != nil {
		return err
	}

	sessOpts := store.SessionOptions{Domain: n.cfg.CookieDomain}
	if n.rdb != nil {
		n.sessions, err = store.NewRedisSessions(ctx, n.rdb, sessOpts)
		if err != nil {
			return err
		}
	} else {
		n.sessions = store.NewCookieStore(n.keys.SessionHash, n.keys.SessionBlock, sessOpts)
	}

	mounts := map[string]http.Handler{}
	if n.mesh != nil {
		mounts["/_mesh/"] = n.mesh.Handler()
	}
	n.web, err = web.New(web.Config{
		Hub:            n.hub,
		Sessions:       n.sessions,
		Node:           n.name,
		BrokerName:     n.cfg.Broker,
		Members:        n.cluster.Members,
		Ready:          n.ready,
		AllowedOrigins: n.cfg.Origins,
		MaxFrameBytes:  n.cfg.MaxFrame,
		Mounts:         mounts,
		TokenKey:       n.keys.Token,
		Logger:         log,
	})
	if err != nil {
		return err
	}

	// Subscribed before the cluster starts so no event is missed.
	n.cluster.Subscribe(n.onClusterEvent)
	if err := n.cluster.Start(ctx); err != nil {
		return err
	}
	if err := n.hub.Start(ctx); err != nil {
		return err
	}

	n.srv = &http.Server{
		Handler:           n.web.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.served <- fmt.Errorf("node: http: %w", err)
		}
	}()
	log.Info("node started", "name", n.name, "http", n.url, "listen", n.HTTPAddr(), "gossip", n.GossipAddr(), "broker", n.cfg.Broker, "join", n.cfg.Join)
	return nil
}

// onClusterEvent runs on the cluster's event goroutine.
func (n *Node) onClusterEvent(ev cluster.Event) {
	n.seenMu.Lock()
	n.seen[ev.Node.Name] = ev.Kind == cluster.EventJoin || ev.Kind == cluster.EventUpdate
	n.seenMu.Unlock()
	if n.mesh != nil {
		n.mesh.PeersChanged()
	}
	if (ev.Kind == cluster.EventDead || ev.Kind == cluster.EventLeave) && ev.Node.Name != n.name {
		n.hub.NodeGone(ev.Node.Name)
	}
}

// ready is /readyz: the cluster is joined and the broker answers.
func (n *Node) ready(ctx context.Context) error {
	if n.stopping.Load() {
		return errStopping
	}
	if !n.cluster.Joined() {
		return fmt.Errorf("%w: cluster not joined", errNotReady)
	}
	if !n.hub.RevocationsLoaded() {
		return fmt.Errorf("%w: logouts not yet loaded", errNotReady)
	}
	// Only a starting node waits for its first view to be applied: later
	// membership changes leave every node briefly behind gossip, and
	// failing readiness then would let a load balancer drop the whole
	// cluster at once.
	if !n.synced.Load() {
		if !n.membershipSynced() {
			return fmt.Errorf("%w: membership not yet applied", errNotReady)
		}
		n.synced.Store(true)
	}
	if p, ok := n.broker.(transport.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return fmt.Errorf("%w: broker: %w", errNotReady, err)
		}
	}
	return nil
}

// membershipSynced reports whether the broker and hub have been told the
// membership that gossip shows: every alive node announced, every dead or
// departed one withdrawn. The cluster coalesces events for up to a quarter
// second; until they arrive, the broker routes with an older view than
// /api/cluster shows, so a node that just joined could take traffic for
// channels it does not own, or count users of a dead node as present.
func (n *Node) membershipSynced() bool {
	members := n.cluster.Members()
	n.seenMu.Lock()
	defer n.seenMu.Unlock()
	for _, m := range members {
		if alive := m.State == cluster.StateAlive; n.seen[m.Name] != alive {
			return false
		}
	}
	return true
}

func (n *Node) aliveNames() []string {
	peers := n.cluster.Alive()
	out := make([]string, len(peers))
	for i, p := range peers {
		out[i] = p.Name
	}
	return out
}

func (n *Node) aliveURLs() []string {
	peers := n.cluster.Alive()
	out := make([]string, 0, len(peers))
	for _, p := range peers {
		if p.Addr != "" {
			out = append(out, p.Addr)
		}
	}
	return out
}

// Stop shuts the node down gracefully: stop accepting connections, tell
// WebSocket clients to reconnect elsewhere (close code 1012), release the
// hub's presence and subscriptions, leave the cluster so peers re-route at
// once, then close the broker and gossip. Later calls return the first
// call's result.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx, true) })
	return n.stopErr
}

// Kill stops the node the way a crash would look to its peers as closely
// as one process allows: gossip stops without a leave message and the
// broker closes before the hub can tidy up, so peers must detect the death
// themselves. Tests use it; Start uses it to undo a partial start.
func (n *Node) Kill(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx, false) })
	return n.stopErr
}

func (n *Node) stop(ctx context.Context, graceful bool) error {
	n.stopping.Store(true)
	began := time.Now()
	var errs []error
	// step runs one stage of the stop and logs how long it took, so a slow
	// shutdown shows where it waited.
	step := func(name string, fn func() error) {
		t0 := time.Now()
		err := fn()
		n.log.Debug("stop step", "step", name, "took", time.Since(t0), "err", err)
		if err != nil {
			errs = append(errs, fmt.Errorf("node: %s: %w", name, err))
		}
	}
	if !graceful {
		if n.cluster != nil {
			step("cluster shutdown", func() error { return n.cluster.Shutdown(ctx) })
		}
		if n.broker != nil {
			step("broker close", func() error { return n.broker.Close(ctx) })
		}
	}

	// Stop accepting: Shutdown closes the listener at once, then waits for
	// in-flight requests (node-to-node calls among them) while we go on.
	shutdownDone := make(chan error, 1)
	if n.srv != nil {
		go func() { shutdownDone <- n.srv.Shutdown(ctx) }()
		select {
		case <-n.ln.closed:
		case <-ctx.Done():
		}
	} else {
		if n.ln != nil {
			_ = n.ln.Close()
		}
		shutdownDone <- nil
	}
	if n.web != nil {
		step("web shutdown", func() error { return n.web.Shutdown(ctx) })
	}
	if n.hub != nil {
		step("hub shutdown", func() error { return n.hub.Shutdown(ctx) })
	}
	if graceful && n.cluster != nil && n.cluster.BindAddr() != "" {
		step("cluster leave", func() error {
			lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := n.cluster.Leave(lctx); err != nil {
				n.log.Warn("cluster leave failed; peers will detect the node as dead", "err", err)
			}
			return nil
		})
	}
	if graceful && n.broker != nil {
		step("broker close", func() error { return n.broker.Close(ctx) })
	}
	step("http shutdown", func() error {
		var err error
		select {
		case err = <-shutdownDone:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil && n.srv != nil {
			_ = n.srv.Close()
		}
		n.serveWG.Wait()
		close(n.served)
		return err
	})
	if graceful && n.cluster != nil {
		step("cluster shutdown", func() error { return n.cluster.Shutdown(ctx) })
	}
	if n.history != nil {
		// After the broker: it writes to the log until Close returns.
		step("history close", n.history.Close)
	}
	if n.rdb != nil {
		step("redis close", n.rdb.Close)
	}
	if n.debug != nil {
		step("debug close", n.debug.close)
	}
	n.log.Debug("node stopped", "graceful", graceful, "took", time.Since(began))
	return errors.Join(errs...)
}

// closeNotifyListener reports when the listener has been closed, so Stop
// can go on with the next step as soon as no new connection can arrive.
type closeNotifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// pinGossipPort turns port 0 into a concrete free port (TCP and UDP) so it
// can appear in the derived node name before memberlist binds it. There is
// a small window in which another process could take the port; Start then
// fails with a clear bind error.
func pinGossipPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr, err
	}
	for range 20 {
		tl, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", err
		}
		p := tl.Addr().(*net.TCPAddr).Port
		ul, uerr := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		tl.Close()
		if uerr == nil {
			ul.Close()
			return net.JoinHostPort(host, strconv.Itoa(p)), nil
		}
	}
	return "", errors.New("no free port for both TCP and UDP")
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
