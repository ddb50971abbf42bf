package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/mesh"
	"github.com/meshchat/meshchat/transport/redis"
	"github.com/meshchat/meshchat/web"
)

// Start binds the HTTP listener and gossip, wires every part and starts
// serving. It returns once the node accepts connections; joining the
// seeds continues in the background (see Ready). On error, everything
// already started is stopped.
//
// The steps run in dependency order: each one only uses what the steps
// before it set.
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
	steps := []func(context.Context) error{
		n.deriveKeys,     // from the secret, given or the node's own
		n.listen,         // the HTTP port goes into the name and URL
		n.loadTLS,        // --tls-cert: https:// goes into the URL
		n.startDebug,     // --debug-addr
		n.identify,       // advertised URL and node name
		n.newMetrics,     // the registry the parts observe into
		n.newCluster,     // membership, not yet joined
		n.dialRedis,      // shared by the redis broker and sessions
		n.newBroker,      // mesh (with its --data log) or redis
		n.newRevocations, // logouts, on the broker
		n.newAccounts,    // accounts and bans, on the broker
		n.newRooms,       // private rooms, on the broker
		n.newHub,         // the chat domain on the broker
		n.newSessions,    // cookie or Redis session store
		n.newWeb,         // HTTP API, WebSocket, UI
		n.joinCluster,    // membership events flow to broker and hub
		n.serveMetrics,   // --metrics-addr
		n.serve,          // accept connections
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	n.running.Store(true)
	n.log.Info("node started", "name", n.name, "http", n.url, "listen", n.HTTPAddr(), "gossip", n.GossipAddr(), "broker", n.cfg.Broker, "join", n.cfg.Join, "server_api", n.cfg.APIKey != "")
	if n.cfg.APIKey != "" && len(n.cfg.APIKey) < minAPIKey {
		n.log.Warn("the --api-key is short: anyone who guesses it may post as any user; use a long random one, e.g. openssl rand -hex 32", "length", len(n.cfg.APIKey))
	}
	return nil
}

// minAPIKey is the --api-key length under which the node warns.
const minAPIKey = 16

// deriveKeys derives the per-purpose keys from the cluster secret, or,
// without one, from the node's own random secret.
func (n *Node) deriveKeys(context.Context) error {
	secret := n.cfg.Secret
	if secret == "" {
		var kept bool
		var err error
		if secret, kept, err = ownSecret(n.cfg.DataDir); err != nil {
			return err
		}
		if kept {
			n.log.Info("no --secret: using this node's own secret", "file", filepath.Join(n.cfg.DataDir, secretFile))
		} else {
			n.log.Warn("no --secret: made a random secret for this run; sessions end when the node restarts. Set --secret (or --data to keep one) and the same --secret on every node of a cluster")
		}
	}
	var err error
	n.keys, err = deriveKeys(secret)
	return err
}

// listen binds the HTTP listener first: its real port goes into the node
// name and the advertised URL that gossip carries.
func (n *Node) listen(context.Context) error {
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node: listen http: %w", err)
	}
	perIP := n.cfg.MaxConnsPerIP
	if perIP < 0 {
		perIP = 0 // no cap: connections are only counted
	}
	n.limit = web.LimitListener(ln, perIP, n.isPeer)
	n.ln = &closeNotifyListener{Listener: n.limit, closed: make(chan struct{})}
	return nil
}

// loadTLS reads the certificate pair and starts watching the files.
func (n *Node) loadTLS(context.Context) error {
	if n.cfg.TLSCert == "" {
		return nil
	}
	var err error
	if n.certs, err = newCertReloader(n.cfg.TLSCert, n.cfg.TLSKey, n.log); err != nil {
		return err
	}
	go n.certs.run()
	return nil
}

func (n *Node) startDebug(context.Context) error {
	if n.cfg.DebugAddr == "" {
		return nil
	}
	var err error
	n.debug, err = startDebug(n.cfg.DebugAddr, n.log)
	return err
}

// identify settles the advertised URL and the node name (derived from the
// hostname and both ports when not configured, which needs the gossip
// port pinned before memberlist binds it).
func (n *Node) identify(context.Context) error {
	var err error
	n.url = n.cfg.AdvertiseHTTP
	if n.url == "" {
		if n.url, err = advertiseURL(n.ln.Addr().String(), os.Hostname, net.LookupHost); err != nil {
			return fmt.Errorf("node: advertise url: %w", err)
		}
		if n.certs != nil {
			n.url = "https://" + strings.TrimPrefix(n.url, "http://")
		}
	}
	n.gossip = n.cfg.GossipAddr
	n.name = n.cfg.Name
	if n.name == "" {
		if n.gossip, err = pinGossipPort(n.gossip); err != nil {
			return fmt.Errorf("node: gossip port: %w", err)
		}
		host, _ := os.Hostname()
		n.name = defaultName(host, portOf(n.ln.Addr().String()), portOf(n.gossip))
	}
	if n.cfg.TagLogs {
		n.log = n.log.With("self", n.name)
	}
	if n.cfg.AdvertiseHTTP == "" && loopbackOnlyToOthers(n.cfg.HTTPAddr, n.url) {
		n.log.Warn("listening on every interface but advertising a loopback address: nodes on other hosts cannot reach this one; set --advertise-http for a cluster of several hosts", "url", n.url)
	}
	return nil
}

func (n *Node) newMetrics(context.Context) error {
	n.metrics = newMetrics(n)
	return nil
}

// peersFile is where, in Config.DataDir, the cluster keeps the gossip
// addresses of the peers it knew, so that a restart finds them again.
const peersFile = "peers.json"

func (n *Node) newCluster(context.Context) error {
	var err error
	cc := cluster.Config{
		Name:     n.name,
		BindAddr: n.gossip,
		HTTPURL:  n.url,
		Join:     n.cfg.Join,
		Key:      n.keys.Gossip,
		Label:    n.cfg.ClusterName,
		Logger:   n.log,
	}
	if n.cfg.DataDir != "" {
		cc.PeersFile = filepath.Join(n.cfg.DataDir, peersFile)
	}
	n.cluster, err = cluster.New(cc)
	return err
}

func (n *Node) dialRedis(context.Context) error {
	if n.cfg.RedisURL == "" {
		return nil
	}
	opts, err := goredis.ParseURL(n.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("node: --redis: %w", err)
	}
	n.rdb = goredis.NewClient(opts)
	n.rdb.AddHook(n.metrics.redisHook)
	return nil
}

func (n *Node) newBroker(context.Context) error {
	switch n.cfg.Broker {
	case "mesh":
		mc := mesh.Config{
			Self:             transport.Peer{Name: n.name, Addr: n.url},
			Key:              n.keys.Mesh,
			ClusterName:      n.cfg.ClusterName,
			Peers:            n.alivePeers,
			Departed:         n.departedNames,
			MinVoters:        n.minVoters,
			HistorySize:      n.cfg.History,
			HistoryMaxAge:    n.cfg.HistoryAge,
			HistoryBudget:    n.cfg.HistoryBudget,
			Pinned:           chat.IsSystemChannel,
			RequestSeconds:   n.metrics.requestSeconds,
			TakeoverSeconds:  n.metrics.takeoverSeconds,
			ReplicateSeconds: n.metrics.replicateSeconds,
			Logger:           n.log,
		}
		if n.certs != nil {
			var err error
			if mc.TLS, err = peerTLSConfig(n.cfg.TLSCA, n.log); err != nil {
				return err
			}
		}
		if n.cfg.DataDir != "" {
			// Same retention as the broker's ring (docs/storage.md).
			var err error
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
			Hook:          n.metrics.redisHook,
			Logger:        n.log,
		})
		if err != nil {
			return err
		}
		n.broker = rb
	default:
		return fmt.Errorf("node: unknown broker %q", n.cfg.Broker)
	}
	return nil
}

func (n *Node) newRevocations(context.Context) error {
	var err error
	n.revoked, err = store.NewRevocations(store.RevocationConfig{
		Node:   n.name,
		Broker: n.broker,
		// Logout snapshots must come more often than history expires.
		HistorySize:   n.cfg.History,
		HistoryMaxAge: n.cfg.HistoryAge,
		Logger:        n.log,
	})
	return err
}

func (n *Node) newAccounts(context.Context) error {
	var err error
	n.accounts, err = store.NewAccounts(store.AccountsConfig{
		Node:          n.name,
		Broker:        n.broker,
		HistorySize:   n.cfg.History,
		HistoryMaxAge: n.cfg.HistoryAge,
		MaxAccounts:   n.cfg.MaxAccounts,
		Password:      n.cfg.PasswordParams,
		Logger:        n.log,
	})
	if err == nil && n.cfg.Auth == string(web.AuthPassword) && n.rdb == nil && n.cfg.DataDir == "" {
		n.log.Warn("accounts live in the cluster's memory only: if every node stops at once (no --data, no --redis), they are lost and users register again")
	}
	if err == nil && n.cfg.Auth == string(web.AuthOpen) {
		n.log.Warn("--auth open: anyone can log in as any name; for demos and benchmarks only")
	}
	return err
}

func (n *Node) newRooms(context.Context) error {
	var err error
	n.rooms, err = store.NewRooms(store.RoomsConfig{
		Node:          n.name,
		Broker:        n.broker,
		HistorySize:   n.cfg.History,
		HistoryMaxAge: n.cfg.HistoryAge,
		Logger:        n.log,
	})
	return err
}

// isAdmin reports whether user was named by --admins.
func (n *Node) isAdmin(user string) bool { return slices.Contains(n.cfg.Admins, user) }

// users is the hub's view of the accounts under --auth password, where
// a DM to a name no account holds is refused; the other modes have no
// table of users (nil).
func (n *Node) users() chat.Users {
	if n.cfg.Auth != string(web.AuthPassword) {
		return nil
	}
	return accountNames{n.accounts}
}

// accountNames answers chat.Users from the accounts. Until the table is
// loaded every name exists: the node is not ready then anyway.
type accountNames struct{ a *store.Accounts }

func (u accountNames) Exists(user string) bool {
	if !u.a.Loaded() {
		return true
	}
	acc, ok := u.a.Lookup(user)
	return ok && acc.Registered()
}

// disconnectUser ends a user's connections on this node when the
// accounts say so: banned, or logged out everywhere.
func (n *Node) disconnectUser(user string, banned bool) {
	if banned {
		n.hub.CloseUser(user, chat.CloseBanned, "banned")
		return
	}
	n.hub.CloseUser(user, chat.CloseLoggedOut, "logged_out")
}

func (n *Node) newHub(context.Context) error {
	var err error
	n.hub, err = chat.New(chat.Config{
		Node:           n.name,
		Broker:         n.broker,
		Nodes:          n.aliveURLs,
		QueueBytes:     n.cfg.QueueBytes,
		RateLimit:      n.cfg.RateLimit,
		Revocations:    n.revoked,
		System:         systemTables{n.revoked, n.accounts, n.rooms},
		Rooms:          n.rooms,
		IsAdmin:        n.isAdmin,
		Users:          n.users(),
		RoomsPerHour:   n.cfg.RoomsPerHour,
		PublishSeconds: n.metrics.publishSeconds,
		Logger:         n.log,
	})
	return err
}

// systemTables hands the publications on "s:" channels to each of the
// node's tables; each takes its own channel.
type systemTables []transport.Handler

func (t systemTables) HandlePublication(channel string, pub transport.Publication) {
	for _, h := range t {
		h.HandlePublication(channel, pub)
	}
}

func (n *Node) newSessions(ctx context.Context) error {
	opts := store.SessionOptions{Domain: n.cfg.CookieDomain, Secure: n.certs != nil}
	if n.rdb == nil {
		n.sessions = store.NewCookieStore(n.keys.SessionHash, n.keys.SessionBlock, opts)
		return nil
	}
	var err error
	n.sessions, err = store.NewRedisSessions(ctx, n.rdb, opts)
	return err
}

func (n *Node) newWeb(context.Context) error {
	mounts := map[string]http.Handler{}
	if n.mesh != nil {
		mounts["/_mesh/"] = n.mesh.Handler()
	}
	if n.cfg.MetricsAddr == "" {
		mounts[MetricsPath] = n.metrics.handler()
	}
	jwtKey := web.JWTKey{}
	if n.cfg.JWTKey != "" {
		var err error
		if jwtKey, err = web.ParseJWTKey(n.cfg.JWTKey); err != nil {
			return err
		}
	}
	var err error
	n.web, err = web.New(web.Config{
		Hub:            n.hub,
		Sessions:       n.sessions,
		Revocations:    n.revoked,
		Auth:           web.AuthMode(n.cfg.Auth),
		Accounts:       n.accounts,
		Admins:         n.cfg.Admins,
		JWTKey:         jwtKey,
		AuthLimits:     n.cfg.AuthLimits,
		Node:           n.name,
		BrokerName:     n.cfg.Broker,
		Members:        web.MembershipFunc(n.members),
		Ready:          n.Ready,
		AllowedOrigins: n.cfg.Origins,
		MaxFrameBytes:  n.cfg.MaxFrame,
		Mounts:         mounts,
		TokenKey:       n.keys.Token,
		APIKey:         n.cfg.APIKey,
		Inspector:      inspector{n},
		Logger:         n.log,
	})
	return err
}

// joinCluster subscribes to membership before the cluster starts, so no
// event is missed, then starts gossip (joining the seeds goes on in the
// background), the hub, and the revocations (after the hub, which starts
// the broker they use).
func (n *Node) joinCluster(ctx context.Context) error {
	n.cluster.Subscribe(n.onClusterEvent)
	if err := n.cluster.Start(ctx); err != nil {
		return err
	}
	if err := n.hub.Start(ctx); err != nil {
		return err
	}
	if err := n.revoked.Start(ctx, n.hub.DisconnectSession); err != nil {
		return err
	}
	if err := n.accounts.Start(ctx, n.disconnectUser); err != nil {
		return err
	}
	return n.rooms.Start(ctx, n.hub.RemovedFromRoom)
}

// serveMetrics serves the metrics on --metrics-addr, once every part
// they read is set; without it they are on the HTTP listener (newWeb).
func (n *Node) serveMetrics(context.Context) error {
	if n.cfg.MetricsAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, n.metrics.handler())
	var err error
	if n.metricsSrv, err = startSide("metrics", n.cfg.MetricsAddr, mux, n.log); err != nil {
		return err
	}
	n.log.Info("metrics listening", "addr", "http://"+n.metricsSrv.Addr()+MetricsPath)
	return nil
}

func (n *Node) serve(context.Context) error {
	n.srv = &http.Server{
		Handler:           n.web.Handler(),
		ConnContext:       web.ConnContext,
		ReadHeaderTimeout: min(10*time.Second, n.cfg.RequestTimeout),
		ReadTimeout:       n.cfg.RequestTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	var ln net.Listener = n.ln
	if n.certs != nil {
		ln = tls.NewListener(ln, n.certs.serverConfig())
	}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.served <- fmt.Errorf("node: http: %w", err)
		}
	}()
	return nil
}
