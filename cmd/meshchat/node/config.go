package node

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/store"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/web"
)

// Defaults the node owns. Every other default belongs to the package that
// uses the value (chat, web, transport); DefaultConfig shows them all.
const (
	DefaultHTTPAddr   = ":8080"
	DefaultGossipAddr = ":7946"
	DefaultBroker     = "mesh"
	// DefaultRequestTimeout bounds reading one HTTP request, headers and
	// body: a client that trickles its request is cut off.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultShutdownTimeout bounds a graceful stop that a signal started.
	DefaultShutdownTimeout = 20 * time.Second
)

// NoConnLimit, as Config.MaxConnsPerIP, turns the per-address connection
// cap off (the command line's --max-conns-per-ip 0).
const NoConnLimit = -1

// NoRateLimit, as Config.RateLimit, turns the per-connection frame limit
// off (the command line's --rate-limit 0); as Config.RoomsPerHour, the
// room creation limit (--room-limit 0).
const NoRateLimit = chat.NoRateLimit

// Config is everything a node can be told. The zero value of every field
// is usable and means its default; New fills and validates them.
type Config struct {
	// HTTPAddr is the HTTP listener (UI, API, WebSocket and node-to-node
	// mesh traffic under /_mesh/). Port 0 picks a free port.
	// Default DefaultHTTPAddr (":8080").
	HTTPAddr string
	// GossipAddr is the memberlist bind address (TCP and UDP). Port 0
	// picks a free port. Default DefaultGossipAddr (":7946").
	GossipAddr string
	// Join lists host:port gossip seeds; empty means a cluster of one.
	Join []string
	// Expect is how many nodes must be alive, this one included, before
	// the node reports ready. 0 means 2 when the node was given seeds
	// other than itself (alone, it is split off from its cluster: load
	// balancers should send no one there), else 1.
	Expect int
	// Broker is "mesh" or "redis". Default "mesh".
	Broker string
	// RedisURL, when set, puts sessions in Redis (whatever the broker) and
	// is the Redis the redis broker uses. Empty: no Redis.
	RedisURL string
	// Name is the node name, unique in the cluster. Empty derives it from
	// the hostname and both ports (see defaultName).
	Name string
	// Secret is the cluster secret every key is derived from, the same on
	// every node of a cluster. Empty: the node makes a random secret of its
	// own (kept in DataDir/secret when DataDir is set), which makes it a
	// cluster of one: Join then needs a Secret.
	Secret string
	// RateLimit is frames per second a connection may send, with bursts
	// of max(110, 2N) (chat computes them). 0 means chat.DefaultRateLimit
	// (50); a negative value (NoRateLimit) turns the limit off.
	RateLimit float64
	// History is how many messages each room (and DM inbox) retains.
	// 0 means transport.DefaultHistorySize (1000).
	History int
	// HistoryAge drops retained messages older than this; 0 keeps them
	// until History pushes them out.
	HistoryAge time.Duration
	// HistoryBudget bounds the bytes of history the mesh broker keeps in
	// memory, all rooms and inboxes together; over it the least recently
	// used are evicted (to DataDir's log when there is one, else dropped).
	// 0 means DefaultHistoryBudget(): a quarter of the memory the process
	// may use, within [MinHistoryBudget, MaxHistoryBudget].
	HistoryBudget int64
	// RoomsPerHour is how many new rooms one user may create per hour on
	// this node. 0 means chat.DefaultRoomsPerHour (100); a negative value
	// (NoRateLimit) turns the limit off.
	RoomsPerHour int
	// MaxFrame is the largest WebSocket frame a client may send, in
	// bytes. 0 means web.DefaultMaxFrameBytes (16 KiB).
	MaxFrame int64
	// QueueBytes bounds each connection's outbound queue; a client that
	// falls this far behind is disconnected and catches up from history.
	// 0 means chat.DefaultQueueBytes (1 MiB).
	QueueBytes int
	// Origins are browser origins allowed on /ws besides the node's own.
	Origins []string
	// CookieDomain, when set, scopes the session cookie to a parent domain
	// (e.g. chat.example.com for n1.chat.example.com and
	// n2.chat.example.com) so that it is sent to every node. Empty: the
	// cookie belongs to the host that set it; clients use the login token
	// on other hosts.
	CookieDomain string
	// AdvertiseHTTP is the HTTP base URL other nodes and clients use to
	// reach this node. Empty derives it from HTTPAddr (see advertiseURL).
	AdvertiseHTTP string
	// DataDir, when set with the mesh broker, keeps the history of the
	// channels this node owns or backs up in DataDir/history.db, so a
	// restart of the whole cluster keeps it. With any broker, the node
	// keeps the gossip addresses of its peers in DataDir/peers.json and
	// joins them at the next start, with or without Join. Empty: memory
	// only.
	DataDir string
	// TLSCert and TLSKey, both or neither, are PEM files: the HTTP
	// listener then serves HTTPS and WSS (UI, API, /ws, /api/events and
	// the mesh under /_mesh/), the advertised URL is https://, and mesh
	// links dial their peers over TLS. Either file changing is noticed
	// within seconds and the new pair served to new connections; a pair
	// that fails to load keeps the old one. Empty: plain HTTP. The
	// metrics and debug listeners stay plain HTTP.
	TLSCert, TLSKey string
	// TLSCA is a PEM file of CAs that, with the system roots, verify the
	// certificates of peers a mesh link dials; with it, a certificate
	// that does not verify fails the link. Empty: such a certificate is
	// accepted with a warning (see peerTLSConfig). Needs TLSCert.
	TLSCA string
	// ClusterName tells clusters apart: nodes with another name never
	// join this one nor link to it, even with the same Secret. Every
	// node of a cluster has the same one. Empty is a name too.
	ClusterName string
	// DebugAddr, when set, serves the Go profiler (net/http/pprof) on a
	// listener of its own, apart from the public HTTP one. It must be a
	// loopback address unless DebugPublic is set. Empty: off.
	DebugAddr string
	// MetricsAddr, when set, serves the Prometheus metrics (MetricsPath)
	// on a listener of its own, and the HTTP listener no longer does:
	// operators keep them off the public port. Empty: the metrics are on
	// the HTTP listener.
	MetricsAddr string
	// DebugPublic allows DebugAddr on an address other hosts can reach:
	// the profiler shows the process's memory and goroutines to whoever
	// connects.
	DebugPublic bool
	// APIKey enables the server API (/api/server/..., see web.Config):
	// programs that send "Authorization: Bearer <APIKey>" may post as
	// any user, read history and presence and disconnect users. Every
	// node of a cluster should have the same key. Empty: the API is off.
	APIKey string

	// Auth is how users log in: "password" (accounts, the default),
	// "open" (a bare name, as in v1) or "jwt" (the app's tokens).
	Auth string
	// JWTKey verifies the app's tokens under Auth "jwt": an HMAC secret,
	// or a PEM public key (or the name of a file holding one) for RS256
	// or ES256.
	JWTKey string
	// Admins are the users who may ban and unban, and delete any
	// message.
	Admins []string
	// MaxAccounts bounds the accounts (and bans) the cluster keeps; every
	// node must have the same value. 0 means store.DefaultMaxAccounts.
	MaxAccounts int
	// PasswordParams are the hashing costs of new passwords; zero means
	// store.DefaultPasswordParams. Tests lower them.
	PasswordParams store.PasswordParams
	// AuthLimits bound login and registration attempts; zero values mean
	// web's defaults. Tests raise them.
	AuthLimits web.AuthLimits

	// Logger is used by the node; nil discards logs.
	Logger *slog.Logger
	// TagLogs adds self=<node name> to every log line, for several nodes
	// sharing one log (demo, tests).
	TagLogs bool
	// RequestTimeout bounds reading one HTTP request, headers and body (a
	// WebSocket's upgrade request included; the socket itself is not
	// bounded by it). 0 means DefaultRequestTimeout (30s); headers alone
	// get at most 10s.
	RequestTimeout time.Duration
	// MaxConnsPerIP caps the TCP connections one remote IP address may
	// hold open on the HTTP listener; those over it are answered 429 and
	// closed at accept. The cluster's other nodes are exempt. Behind a
	// proxy every client shares the proxy's address: raise it or turn it
	// off there. 0 means web.DefaultMaxConnsPerIP (256); a negative
	// value (NoConnLimit) turns the cap off.
	MaxConnsPerIP int
	// ShutdownTimeout bounds a graceful stop that a signal started (see
	// Node.ShutdownTimeout). 0 or less means DefaultShutdownTimeout (20s).
	ShutdownTimeout time.Duration
}

// DefaultConfig is the Config New would use for a zero Config, with every
// default spelled out: the command line shows these values in its help.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

// fill replaces zero values by their defaults, each read from the package
// that owns it.
func (c *Config) fill() {
	c.HTTPAddr = cmp.Or(c.HTTPAddr, DefaultHTTPAddr)
	c.GossipAddr = cmp.Or(c.GossipAddr, DefaultGossipAddr)
	c.Broker = cmp.Or(c.Broker, DefaultBroker)
	c.Auth = cmp.Or(c.Auth, string(web.AuthPassword))
	c.RateLimit = cmp.Or(c.RateLimit, chat.DefaultRateLimit)
	c.History = cmp.Or(c.History, transport.DefaultHistorySize)
	if c.HistoryBudget == 0 {
		c.HistoryBudget = DefaultHistoryBudget()
	}
	c.RoomsPerHour = cmp.Or(c.RoomsPerHour, chat.DefaultRoomsPerHour)
	c.MaxFrame = cmp.Or(c.MaxFrame, web.DefaultMaxFrameBytes)
	c.QueueBytes = cmp.Or(c.QueueBytes, chat.DefaultQueueBytes)
	c.MaxConnsPerIP = cmp.Or(c.MaxConnsPerIP, web.DefaultMaxConnsPerIP)
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// Validate fills c's defaults and checks it; errors name the command-line
// flag at fault. It normalizes Origins and AdvertiseHTTP in place.
func (c *Config) Validate() error {
	c.fill()
	for _, a := range []struct{ flag, addr string }{{"--http", c.HTTPAddr}, {"--gossip", c.GossipAddr}} {
		if err := checkHostPort(a.addr); err != nil {
			return fmt.Errorf("config: %s %q: %w", a.flag, a.addr, err)
		}
	}
	for _, j := range c.Join {
		if err := checkHostPort(j); err != nil {
			return fmt.Errorf("config: --join %q: %w", j, err)
		}
	}
	if len(c.Join) > 0 && c.Secret == "" {
		return errors.New("config: --join needs --secret (or MESHCHAT_SECRET), the same on every node: without one a node makes a random secret of its own and can form no cluster")
	}
	if _, err := web.ParseAuthMode(c.Auth); err != nil {
		return fmt.Errorf("config: --auth %q: want password, open or jwt", c.Auth)
	}
	if (c.Auth == string(web.AuthJWT)) != (c.JWTKey != "") {
		return errors.New("config: --jwt-key goes with --auth jwt, and --auth jwt needs --jwt-key")
	}
	if c.JWTKey != "" {
		if _, err := web.ParseJWTKey(c.JWTKey); err != nil {
			return fmt.Errorf("config: --jwt-key: %w", err)
		}
	}
	for _, a := range c.Admins {
		if !chat.ValidName(a) {
			return fmt.Errorf("config: --admins %q: not a valid user name", a)
		}
	}
	if c.MaxAccounts < 0 {
		return fmt.Errorf("config: MaxAccounts %d: want >= 0", c.MaxAccounts)
	}
	switch c.Broker {
	case "mesh":
	case "redis":
		if c.RedisURL == "" {
			return errors.New("config: --broker redis needs --redis URL (or MESHCHAT_REDIS)")
		}
	default:
		return fmt.Errorf("config: --broker %q: want mesh or redis", c.Broker)
	}
	if c.RedisURL != "" {
		if _, err := goredis.ParseURL(c.RedisURL); err != nil {
			return fmt.Errorf("config: --redis %q: %w", c.RedisURL, err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("config: --tls-cert and --tls-key go together: give both files, or neither for plain HTTP")
	}
	if c.TLSCA != "" && c.TLSCert == "" {
		return errors.New("config: --tls-ca needs --tls-cert and --tls-key: it verifies peers reached over TLS")
	}
	if c.ClusterName != "" && !nodeNameRE.MatchString(c.ClusterName) {
		return fmt.Errorf("config: --cluster-name %q: want 1-64 of letters, digits, '_', '.', ':', '-'", c.ClusterName)
	}
	if c.Name != "" && !nodeNameRE.MatchString(c.Name) {
		return fmt.Errorf("config: --name %q: want 1-64 of letters, digits, '_', '.', ':', '-'", c.Name)
	}
	if math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		return fmt.Errorf("config: --rate-limit %v: want a number", c.RateLimit)
	}
	if c.Expect < 0 {
		return fmt.Errorf("config: --expect %d: want >= 0", c.Expect)
	}
	if c.HistoryBudget < 0 {
		return fmt.Errorf("config: --history-budget %d: want > 0", c.HistoryBudget)
	}
	if c.History < 1 {
		return fmt.Errorf("config: --history %d: want at least 1", c.History)
	}
	if c.HistoryAge < 0 {
		return fmt.Errorf("config: --history-age %v: want >= 0", c.HistoryAge)
	}
	if c.MaxFrame < 256 {
		return fmt.Errorf("config: --max-frame %d: want at least 256 bytes", c.MaxFrame)
	}
	if int64(c.QueueBytes) < c.MaxFrame {
		return fmt.Errorf("config: --queue-bytes %d: want at least --max-frame (%d)", c.QueueBytes, c.MaxFrame)
	}
	if c.MetricsAddr != "" {
		if err := checkHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("config: --metrics-addr %q: %w", c.MetricsAddr, err)
		}
	}
	if c.DebugAddr != "" && !c.DebugPublic {
		if err := checkLoopback(c.DebugAddr); err != nil {
			return fmt.Errorf("config: --debug-addr %q: %w; the profiler exposes the process: keep it on 127.0.0.1, or add --debug-public", c.DebugAddr, err)
		}
	}
	if c.APIKey != strings.TrimSpace(c.APIKey) {
		return errors.New("config: --api-key: the key has leading or trailing spaces")
	}
	if c.CookieDomain != "" && (strings.ContainsAny(c.CookieDomain, ":/ ") || strings.Trim(c.CookieDomain, ".") == "") {
		return fmt.Errorf("config: --cookie-domain %q: want a bare domain such as chat.example.com", c.CookieDomain)
	}
	for i, o := range c.Origins {
		norm, err := normalizeBaseURL(o)
		if err != nil {
			return fmt.Errorf("config: --origins %q: %w", o, err)
		}
		c.Origins[i] = norm
	}
	if c.AdvertiseHTTP != "" {
		norm, err := normalizeBaseURL(c.AdvertiseHTTP)
		if err != nil {
			return fmt.Errorf("config: --advertise-http %q: %w", c.AdvertiseHTTP, err)
		}
		c.AdvertiseHTTP = norm
	}
	return nil
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// checkLoopback accepts host:port only when host is a loopback address or
// "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("not a loopback address")
}

// normalizeBaseURL accepts scheme://host[:port] with an optional trailing
// slash and returns it without the slash: the form browsers send in Origin
// and the form nodes prefix to paths.
func normalizeBaseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", errors.New("want an http:// or https:// URL")
	}
	if u.Host == "" {
		return "", errors.New("missing host")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("want scheme://host[:port] only")
	}
	return u.Scheme + "://" + u.Host, nil
}
