package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/sessions"
	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/web/ui"
)

// Defaults for Config.
const (
	DefaultMaxFrameBytes  = 16 << 10
	DefaultHardFrameBytes = 1 << 20
	DefaultTokenTTL       = 12 * time.Hour
	DefaultPingInterval   = 20 * time.Second
	DefaultPongTimeout    = 45 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	// CookieName is the session cookie's name.
	CookieName = "meshchat"
	// HintCookieName is a cookie pages can read (not HttpOnly, no
	// secret in it) that says a session cookie was set: it is set and
	// cleared with the session cookie, with the same scope and lifetime,
	// so a page can skip asking /api/me when nobody logged in.
	HintCookieName = "meshchat_in"
	// closeGrace is how long the reader may wait for the peer's close
	// frame after the writer sent ours.
	closeGrace = 2 * time.Second
	// lingerBytes bounds what the reader drops, after a frame over the
	// hard cap, while the peer learns why it is being closed; the drop
	// ends early once the peer has sent nothing for lingerQuiet.
	lingerBytes = 4 << 20
	lingerQuiet = 500 * time.Millisecond
	// maxLoginBody bounds the login request body.
	maxLoginBody = 4 << 10
)

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Hub is the chat hub WebSocket clients connect to. Required.
	Hub *chat.Hub
	// Sessions stores the session cookie (store.NewCookieStore or
	// store.NewRedisSessions). Required.
	Sessions sessions.Store
	// Revocations records logouts cluster-wide and answers whether a
	// session was logged out (store.Revocations). Required.
	Revocations Revocations
	// Auth is how users log in. Default AuthPassword.
	Auth AuthMode
	// Accounts is the cluster's table of accounts and bans
	// (store.Accounts). Required with AuthPassword; with the other modes
	// it holds the bans (nil: nobody can be banned).
	Accounts Accounts
	// Admins are the users who may ban and unban (--admins).
	Admins []string
	// JWTKey verifies the app's tokens under AuthJWT. Required there.
	JWTKey JWTKey
	// AuthLimits bound login and registration attempts.
	AuthLimits AuthLimits
	// Node is this node's name, reported by the API. Default: Hub.Node().
	Node string
	// BrokerName is "mesh" or "redis", reported by /api/cluster.
	BrokerName string
	// Members lists the cluster's nodes for /api/cluster and the origin
	// check. Nil means a cluster of this node alone.
	Members Membership
	// Ready reports whether the node can serve (/readyz). Nil means
	// always ready.
	Ready func(ctx context.Context) error
	// AllowedOrigins are extra browser origins ("https://chat.example.com")
	// allowed on /ws and the POST endpoints, besides the request's own
	// host and the cluster members' HTTP URLs.
	AllowedOrigins []string
	// MaxFrameBytes is the largest WebSocket frame a client may send; a
	// larger one is answered with a too_large error frame and the
	// connection stays open. Default 16 KiB.
	MaxFrameBytes int64
	// HardFrameBytes is the frame size at which the connection is closed
	// with 1009 instead. Default max(1 MiB, 4*MaxFrameBytes).
	HardFrameBytes int64
	// Mounts are extra handlers by path prefix, e.g. "/_mesh/" for
	// node-to-node traffic. A prefix ending in "/" matches everything
	// under it; handlers see the full request path.
	Mounts map[string]http.Handler
	// UI serves everything the other routes do not claim. Default
	// ui.Handler(), the embedded single-page app.
	UI http.Handler
	// TokenKey signs the bearer tokens login hands out. Every node must
	// have the same key for tokens to work across nodes. Nil means a
	// random key: tokens then work on this node only.
	TokenKey []byte
	// TokenTTL is how long a bearer token is valid (never longer than its
	// session). Default 12h.
	TokenTTL time.Duration
	// TicketTTL is how long a ticket (POST /api/ticket) may wait to be
	// used. Default DefaultTicketTTL (30s).
	TicketTTL time.Duration
	// PingInterval, PongTimeout and WriteTimeout govern WebSocket
	// keepalive: a ping every PingInterval (default 20s), the connection
	// is dropped when nothing arrives for PongTimeout (default 45s) or a
	// write takes longer than WriteTimeout (default 10s).
	PingInterval, PongTimeout, WriteTimeout time.Duration
	// Inspector adds what only the node knows to the admin view's
	// report (GET /api/admin/node): the broker's health and which node
	// orders each room. Nil: the report says the broker is healthy
	// whenever the node is ready, and names no node per room.
	Inspector Inspector
	// APIKey enables the server API (/api/server/..., api.go): requests
	// carrying "Authorization: Bearer <APIKey>" may post as any user,
	// read history and presence and disconnect users. Empty: the API is
	// off and its paths answer 404.
	APIKey string
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
}

// Server serves meshchat's HTTP API and WebSocket endpoint.
type Server struct {
	cfg         Config
	hub         *chat.Hub
	sessions    sessions.Store
	revocations Revocations
	accounts    Accounts
	mode        AuthMode
	admins      map[string]bool
	limits      limiters
	sessionLog  transport.LogLimit // logins, connects, disconnects
	checker     sessionChecker     // set when sessions live server-side
	node        string
	allowed     map[string]bool // normalised origins
	tokenKey    []byte
	tickets     *usedTickets
	now         func() time.Time  // the tickets' clock; tests set it
	apiKeySum   [sha256.Size]byte // of Config.APIKey
	log         *slog.Logger
	handler     http.Handler
	upgrader    websocket.Upgrader
	frames      sync.Pool // *bytes.Buffer, one per frame being handled
	corks       corkPool
	wbufs       writeBufPool
	batches     sync.Pool // *[][]byte, one per running connection writer
	writers     *writers
	logins      outcomes // by outcome; see CountLogin

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	mu      sync.Mutex
	closing bool
	conns   map[*websocket.Conn]struct{}
	wg      sync.WaitGroup // one per WebSocket connection
}

// New validates cfg and builds the server.
func New(cfg Config) (*Server, error) {
	if cfg.Hub == nil {
		return nil, ErrNoHub
	}
	if cfg.Sessions == nil {
		return nil, ErrNoSessions
	}
	if cfg.Revocations == nil {
		return nil, ErrNoRevocations
	}
	if cfg.MaxFrameBytes < 0 || cfg.HardFrameBytes < 0 || cfg.TokenTTL < 0 ||
		cfg.PingInterval < 0 || cfg.PongTimeout < 0 || cfg.WriteTimeout < 0 || cfg.TicketTTL < 0 {
		return nil, ErrNegativeConfig
	}
	mode, err := ParseAuthMode(string(cfg.Auth))
	if err != nil {
		return nil, err
	}
	switch {
	case mode == AuthPassword && cfg.Accounts == nil:
		return nil, ErrNoAccounts
	case mode == AuthJWT && len(cfg.JWTKey.HMAC) == 0 && cfg.JWTKey.Public == nil:
		return nil, ErrNoJWTKey
	case cfg.Accounts == nil:
		cfg.Accounts = noAccounts{}
	}
	if cfg.Node == "" {
		cfg.Node = cfg.Hub.Node()
	}
	if cfg.MaxFrameBytes == 0 {
		cfg.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if cfg.HardFrameBytes == 0 {
		cfg.HardFrameBytes = max(DefaultHardFrameBytes, 4*cfg.MaxFrameBytes)
	}
	if cfg.HardFrameBytes < cfg.MaxFrameBytes {
		return nil, fmt.Errorf("web: hard frame cap %d below frame limit %d", cfg.HardFrameBytes, cfg.MaxFrameBytes)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.TicketTTL == 0 {
		cfg.TicketTTL = DefaultTicketTTL
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.UI == nil {
		cfg.UI = ui.Handler()
	}
	s := &Server{
		cfg:         cfg,
		hub:         cfg.Hub,
		sessions:    cfg.Sessions,
		revocations: cfg.Revocations,
		accounts:    cfg.Accounts,
		mode:        mode,
		admins:      make(map[string]bool),
		limits:      newLimiters(cfg.AuthLimits),
		sessionLog:  transport.LogLimit{PerSecond: sessionLogsPerSecond},
		node:        cfg.Node,
		allowed:     make(map[string]bool),
		tokenKey:    cfg.TokenKey,
		tickets:     newUsedTickets(cfg.TicketTTL),
		now:         time.Now,
		log:         cfg.Logger,
		conns:       make(map[*websocket.Conn]struct{}),
	}
	s.checker, _ = cfg.Sessions.(sessionChecker)
	for _, a := range cfg.Admins {
		s.admins[a] = true
	}
	s.apiKeySum = sha256.Sum256([]byte(cfg.APIKey))
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "web")
	for _, o := range cfg.AllowedOrigins {
		n, ok := normalizeOrigin(o)
		if !ok {
			return nil, fmt.Errorf("web: invalid allowed origin %q", o)
		}
		s.allowed[n] = true
	}
	if len(s.tokenKey) == 0 {
		s.tokenKey = make([]byte, 32)
		if _, err := rand.Read(s.tokenKey); err != nil {
			return nil, fmt.Errorf("web: random token key: %w", err)
		}
	}
	s.upgrader = websocket.Upgrader{
		// 0: gorilla adopts the wsReadBufferSize reader corkingWriter
		// hands it with the hijacked connection.
		ReadBufferSize:  0,
		WriteBufferSize: wsWriteBufferSize,
		WriteBufferPool: &s.wbufs,
		// The origin was checked before the upgrade (checkOrigin), with
		// a JSON 403 instead of gorilla's plain one.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.writers = newWriters(writerIdle)
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// ConnContext is for http.Server.ConnContext: it keeps each request's
// connection in its context, so that an events stream cut off as a slow
// consumer can reset it (abortConn). Without it such a stream is closed
// in order.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

type connKey struct{}

// connOf returns the connection ConnContext kept in ctx, or nil.
func connOf(ctx context.Context) net.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return c
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllow, "method not allowed")
	})

	api := newJSONRouter()
	api.Get("/auth", s.handleAuthMode)
	api.Post("/register", s.handleRegister)
	api.Post("/login", s.handleLogin)
	api.Post("/logout", s.handleLogout)
	api.Post("/logout-all", s.handleLogoutAll)
	api.Post("/password", s.handlePassword)
	api.Get("/me", s.handleMe)
	api.Post("/admin/ban", s.handleBan(true))
	api.Post("/admin/unban", s.handleBan(false))
	api.Post("/admin/disconnect", s.handleAdminDisconnect)
	api.Get("/admin/node", s.handleAdminNode)
	api.Options("/admin/node", s.handlePreflight(http.MethodGet))
	api.Post("/ticket", s.handleTicket)
	api.Options("/ticket", s.handlePreflight(http.MethodPost))
	api.Get("/cluster", s.handleCluster)
	api.Get("/events", s.handleEvents)
	api.Post("/send", s.handleSend)
	api.Post("/dm", s.handleDM)
	api.Post("/typing", s.handleTyping)
	if s.cfg.APIKey != "" {
		api.Mount("/server", s.serverAPI())
	}
	r.Mount("/api", api)

	r.Get("/ws", s.handleWS)
	r.Get("/healthz", s.handleHealth)
	r.Get("/readyz", s.handleReady)
	for prefix, h := range s.cfg.Mounts {
		if strings.HasSuffix(prefix, "/") {
			r.Handle(prefix+"*", h)
		} else {
			r.Handle(prefix, h)
		}
	}
	r.Handle("/*", s.cfg.UI)
	return r
}

// recoverer turns a panic in a handler into a logged 500.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	writeJSON(w, status, b)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": s.node})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		writeError(w, http.StatusServiceUnavailable, CodeNotReady, "shutting down")
		return
	}
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, CodeNotReady, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "node": s.node})
}

// Membership is what the server knows of the cluster: the nodes
// /api/cluster lists, whose HTTP URLs are also allowed origins. The node
// adapts package cluster to it.
type Membership interface {
	Members() []Member
}

// MembershipFunc adapts a function to Membership.
type MembershipFunc func() []Member

// Members calls f.
func (f MembershipFunc) Members() []Member { return f() }

var _ Membership = MembershipFunc(nil)

// Member is one node of the cluster.
type Member struct {
	Name string
	HTTP string // advertised HTTP base URL
	// State is the membership state: "alive" and "suspect" are reported
	// as such, anything else ("dead", "left") as "dead".
	State string
}

type clusterNode struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"`
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Node   string        `json:"node"`
		Broker string        `json:"broker"`
		Nodes  []clusterNode `json:"nodes"`
	}{s.node, s.cfg.BrokerName, s.clusterNodes(r)})
}

// clusterNodes is the cluster as this node sees it.
func (s *Server) clusterNodes(r *http.Request) []clusterNode {
	nodes := []clusterNode{}
	if s.cfg.Members == nil {
		return append(nodes, clusterNode{Name: s.node, HTTP: requestBase(r), State: "alive"})
	}
	for _, m := range s.cfg.Members.Members() {
		nodes = append(nodes, clusterNode{Name: m.Name, HTTP: m.HTTP, State: publicState(m.State)})
	}
	return nodes
}

// publicState maps membership states onto the contract's three: a node
// that left cleanly is as gone as a dead one.
func publicState(st string) string {
	switch st {
	case "alive":
		return "alive"
	case "suspect":
		return "suspect"
	default:
		return "dead"
	}
}

func isTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func requestBase(r *http.Request) string {
	if isTLS(r) {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// normalizeOrigin reduces an origin or base URL to "scheme://host[:port]",
// lower-case, without a default port.
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if h, port, err := net.SplitHostPort(host); err == nil &&
		((scheme == "http" && port == "80") || (scheme == "https" && port == "443")) {
		host = h
	}
	return scheme + "://" + host, true
}

func stripDefaultPort(host string) string {
	if h, port, err := net.SplitHostPort(host); err == nil && (port == "80" || port == "443") {
		return h
	}
	return host
}

// originAllowed: no Origin header (not a browser), the request's own host,
// a configured origin, or any cluster member's HTTP URL.
func (s *Server) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	origin, ok := normalizeOrigin(o)
	if !ok {
		return false
	}
	host := origin[strings.Index(origin, "://")+3:]
	if host == stripDefaultPort(strings.ToLower(r.Host)) {
		return s.hostKnown(host)
	}
	// A proxy in front says which host the browser talked to; a browser
	// page cannot set this header itself.
	if fwd := r.Header.Get("X-Forwarded-Host"); fwd != "" {
		first, _, _ := strings.Cut(fwd, ",")
		if host == stripDefaultPort(strings.ToLower(strings.TrimSpace(first))) {
			return true
		}
	}
	if s.allowed[origin] {
		return true
	}
	if s.cfg.Members != nil {
		for _, m := range s.cfg.Members.Members() {
			if n, ok := normalizeOrigin(m.HTTP); ok && n == origin {
				return true
			}
		}
	}
	return false
}

// hostKnown reports whether a request's own host (as the Origin check
// compares it) is one this node answers to: an IP address (which DNS
// cannot rebind), localhost, a cluster member's advertised host, or the
// host of an allowed origin (--origins). DNS rebinding makes a browser
// send an attacker's name both in Host and in the page's Origin, so a
// match between the two proves nothing by itself.
func (s *Server) hostKnown(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.Trim(name, "[]")
	if net.ParseIP(name) != nil || name == "localhost" {
		return true
	}
	for o := range s.allowed {
		if strings.HasSuffix(o, "://"+host) {
			return true
		}
	}
	if s.cfg.Members != nil {
		for _, m := range s.cfg.Members.Members() {
			if n, ok := normalizeOrigin(m.HTTP); ok && strings.HasSuffix(n, "://"+host) {
				return true
			}
		}
	}
	return false
}

// Shutdown stops accepting WebSocket connections, disconnects every
// client with close code 1012 (service restart: reconnect to another
// node) through the hub, and waits for the connections' goroutines. When
// ctx ends first the remaining sockets are closed hard. Safe to call
// twice.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	err := s.hub.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.writers.close()
		return err
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-done
	s.writers.close()
	return ctx.Err()
}
