package node

import (
	"log/slog"
	"net/http"
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
	"github.com/meshchat/meshchat/web"
)

// The node plugs the record of logouts that package store keeps into chat
// and web, which declare what they need of it; store imports neither, so
// the checks that it fits live here, where the parts meet.
var (
	_ chat.Revocations = (*store.Revocations)(nil)
	_ web.Revocations  = (*store.Revocations)(nil)
	_ web.Accounts     = (*store.Accounts)(nil)
	_ chat.RoomAccess  = (*store.Rooms)(nil)
)

// Node is one running meshchat node: gossip membership, a broker (mesh or
// redis), the chat hub, the session store and the HTTP server, wired
// together from a Config. Several Nodes can run in one process.
//
// Concurrency: Start is called once; Stop and Kill may be called from any
// goroutine, more than once, and the first one wins. Accessors are safe
// once Start has returned.
type Node struct {
	cfg Config
	log *slog.Logger

	// Set by Start's steps, in this order, then read-only.
	keys     keys // from the secret, given or the node's own
	ln       *closeNotifyListener
	limit    *web.ConnLimiter // under ln: the per-address connection cap
	certs    *certReloader    // --tls-cert, or nil
	debug    *sideServer      // --debug-addr, or nil
	metrics  *metrics
	url      string
	name     string
	gossip   string // the gossip bind address, port pinned
	cluster  *cluster.Cluster
	rdb      *goredis.Client
	broker   transport.Broker
	mesh     *mesh.Broker       // nil with the redis broker
	history  *mesh.Bolt         // on-disk history log (--data, mesh only), or nil
	revoked  *store.Revocations // logged-out sessions, cluster-wide
	accounts *store.Accounts    // accounts and bans, cluster-wide
	rooms    *store.Rooms       // private rooms, cluster-wide
	hub      *chat.Hub
	sessions sessions.Store
	web      *web.Server
	srv      *http.Server
	// metricsSrv serves the metrics with --metrics-addr, or is nil.
	metricsSrv *sideServer

	// seen is the membership as last handed to the broker and hub (alive
	// names), written by onClusterEvent on the cluster's event goroutine.
	seenMu sync.Mutex
	seen   map[string]bool
	// peers are the other alive nodes' addresses, which the connection
	// cap exempts (updatePeerIPs).
	peers atomic.Pointer[peerIPs]

	started  atomic.Bool // Start was called
	running  atomic.Bool // Start returned without error
	stopping atomic.Bool
	synced   atomic.Bool // the first membership view reached broker and hub
	served   chan error  // receives Serve's error if it fails on its own
	serveWG  sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New validates cfg and fills its defaults. It does no I/O: Start reads
// or makes the secret and binds the listeners.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir != "" && cfg.Broker != "mesh" {
		cfg.Logger.Warn("--data is ignored with --broker redis: Redis keeps the history", "dir", cfg.DataDir)
	}
	return &Node{cfg: cfg, log: cfg.Logger, served: make(chan error, 1), seen: map[string]bool{}}, nil
}

// Name is the node's name in the cluster.
func (n *Node) Name() string { return n.name }

// URL is the node's advertised HTTP base URL.
func (n *Node) URL() string { return n.url }

// HTTPAddr is the address the HTTP listener is bound to.
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// GossipAddr is the gossip address other nodes can --join.
func (n *Node) GossipAddr() string { return n.cluster.BindAddr() }

// DebugAddr is the profiler's listen address, or "" without DebugAddr.
func (n *Node) DebugAddr() string {
	if n.debug == nil {
		return ""
	}
	return n.debug.Addr()
}

// MetricsAddr is the metrics listener's address, or "" without
// MetricsAddr (the metrics are then on the HTTP listener).
func (n *Node) MetricsAddr() string {
	if n.metricsSrv == nil {
		return ""
	}
	return n.metricsSrv.Addr()
}

// Cluster exposes membership, for the demo and tests.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Done receives the HTTP server's error if it stops on its own; it is
// closed once the node has stopped.
func (n *Node) Done() <-chan error { return n.served }

// ShutdownTimeout is the bound Config gives a graceful stop that a signal
// started.
func (n *Node) ShutdownTimeout() time.Duration { return n.cfg.ShutdownTimeout }
