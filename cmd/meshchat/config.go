package main

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultSecret is the cluster secret used when neither --secret nor
// MESHCHAT_SECRET is given. It is public (it is written here and in the
// README), so it protects nothing: it only lets `--join` work out of the box
// on a trusted network. Every production deployment sets its own secret.
const DefaultSecret = "meshchat-insecure-default-secret-change-me"

// envPrefix is prepended to a flag's upper-cased name to find its
// environment variable.
const envPrefix = "MESHCHAT_"

// Defaults of the serve flags; the help text and README show these values.
const (
	defaultHTTPAddr   = ":8080"
	defaultGossipAddr = ":7946"
	defaultBroker     = "mesh"
	defaultRateLimit  = 50
	defaultHistory    = 1000
	defaultMaxFrame   = 16 << 10
	defaultQueueBytes = 1 << 20
	// minRateBurst is the smallest burst a rate-limited connection gets:
	// the contract promises bursts of at least 100 frames, and a client
	// spends one on its join first; the rest is headroom.
	minRateBurst = 110
)

// Config is everything `meshchat serve` can be told. The zero value is not
// usable; parseServe fills defaults, and tests build Configs directly from
// testConfig-style helpers.
type Config struct {
	// HTTPAddr is the HTTP listener (UI, API, WebSocket and node-to-node
	// mesh traffic under /_mesh/). Port 0 picks a free port.
	HTTPAddr string
	// GossipAddr is the memberlist bind address (TCP and UDP). Port 0 picks
	// a free port.
	GossipAddr string
	// Join lists host:port gossip seeds; empty means a cluster of one.
	Join []string
	// Broker is "mesh" or "redis".
	Broker string
	// RedisURL, when set, puts sessions in Redis (whatever the broker) and
	// is the Redis the redis broker uses.
	RedisURL string
	// Name is the node name, unique in the cluster. Empty derives it from
	// the hostname and both ports (see defaultName).
	Name string
	// Secret is the cluster secret every key is derived from. Empty means
	// DefaultSecret, with a warning.
	Secret string
	// RateLimit is frames per second a connection may send; 0 is no limit.
	RateLimit float64
	// History is how many messages each room (and DM inbox) retains.
	History int
	// HistoryAge drops retained messages older than this; 0 keeps them
	// until History pushes them out.
	HistoryAge time.Duration
	// MaxFrame is the largest WebSocket frame a client may send, in bytes.
	MaxFrame int64
	// QueueBytes bounds each connection's outbound queue; a client that
	// falls this far behind is disconnected and catches up from history.
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
	// restart of the whole cluster keeps it. Empty: memory only.
	DataDir string
	// DebugAddr, when set, serves the Go profiler (net/http/pprof) on a
	// listener of its own, apart from the public HTTP one.
	// Empty: off.
	DebugAddr string
	// LogLevel and LogFormat ("text" or "json") shape the logger that
	// newLogger builds for the serve command.
	LogLevel  slog.Level
	LogFormat string

	// Logger is used by the node; nil discards logs. Not a flag: the
	// commands build it from LogLevel/LogFormat, tests pass their own.
	Logger *slog.Logger
	// TagLogs adds self=<node name> to every log line, for several nodes
	// sharing one log (demo, tests). Not a flag.
	TagLogs bool
	// ShutdownTimeout bounds a graceful stop triggered by a signal.
	// Not a flag; zero means 20s.
	ShutdownTimeout time.Duration
}

// keys are the per-purpose keys derived from the cluster secret. Components
// receive ready keys and never see the secret, so a leaked session key does
// not expose gossip traffic and vice versa.
type keys struct {
	Gossip       []byte // memberlist encryption (AES-256)
	SessionHash  []byte // session cookie HMAC
	SessionBlock []byte // session cookie encryption (AES-256)
	Mesh         []byte // authenticates node-to-node HTTP traffic
	Token        []byte // signs short-lived tokens handed to clients
}

// keySalt is fixed: HKDF's salt only needs to be public and constant, and a
// per-deployment salt would break nodes that share a secret.
const keySalt = "meshchat/v1 key derivation"

// deriveKeys expands the secret into one 32-byte key per purpose with
// HKDF-SHA256, the purpose being the HKDF info label.
func deriveKeys(secret string) (keys, error) {
	if secret == "" {
		return keys{}, errors.New("config: empty secret")
	}
	derive := func(label string) ([]byte, error) {
		return hkdf.Key(sha256.New, []byte(secret), []byte(keySalt), label, 32)
	}
	var k keys
	for _, d := range []struct {
		label string
		dst   *[]byte
	}{
		{"gossip", &k.Gossip},
		{"session-hash", &k.SessionHash},
		{"session-block", &k.SessionBlock},
		{"mesh", &k.Mesh},
		{"token", &k.Token},
	} {
		key, err := derive(d.label)
		if err != nil {
			return keys{}, fmt.Errorf("config: derive %s key: %w", d.label, err)
		}
		*d.dst = key
	}
	return k, nil
}

// listValue is a comma-separated flag value; blanks are dropped.
type listValue struct{ dst *[]string }

func (v listValue) String() string {
	if v.dst == nil {
		return ""
	}
	return strings.Join(*v.dst, ",")
}

func (v listValue) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*v.dst = out
	return nil
}

// bytesValue is a size flag: a plain number of bytes, or a number with a
// KiB/MiB/GiB (or k/m/g, KB/MB/GB, all powers of 1024) suffix.
type bytesValue struct{ dst *int64 }

func (v bytesValue) String() string {
	if v.dst == nil {
		return "0"
	}
	return formatBytes(*v.dst)
}

func (v bytesValue) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*v.dst = n
	return nil
}

func formatBytes(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := int64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("bad size %q: unknown unit %q", s, unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// levelValue adapts slog.Level to flag.Value.
type levelValue struct{ dst *slog.Level }

func (v levelValue) String() string {
	if v.dst == nil {
		return "info"
	}
	return strings.ToLower(v.dst.String())
}

func (v levelValue) Set(s string) error { return v.dst.UnmarshalText([]byte(s)) }

// flagDoc is what the help text needs beyond flag.Flag: the argument's
// name and, where the raw default would mislead, how to describe it.
type flagDoc struct {
	name, arg, def string
}

// serveFlags registers the serve flags on fs, writing into cfg, which
// holds the defaults when serveFlags is called. It returns the flags in
// the order the help text lists them (the contract's first).
func serveFlags(fs *flag.FlagSet, cfg *Config) []flagDoc {
	var docs []flagDoc
	doc := func(name, arg, def string) { docs = append(docs, flagDoc{name, arg, def}) }

	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP listener for UI, API, WebSocket and node-to-node traffic")
	doc("http", "ADDR", "")
	fs.StringVar(&cfg.GossipAddr, "gossip", cfg.GossipAddr, "memberlist bind address, TCP and UDP")
	doc("gossip", "ADDR", "")
	fs.Var(listValue{&cfg.Join}, "join", "comma-separated host:port gossip seeds")
	doc("join", "LIST", "none (a cluster of one)")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "message broker: mesh (peer-to-peer) or redis")
	doc("broker", "NAME", "")
	fs.StringVar(&cfg.RedisURL, "redis", cfg.RedisURL, "Redis URL redis://[:password@]host:port/db; when set, sessions live in Redis whatever the broker")
	doc("redis", "URL", "none")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "node name, unique in the cluster")
	doc("name", "ID", "<hostname>-<http port>-<gossip port>")
	fs.StringVar(&cfg.Secret, "secret", cfg.Secret, "cluster secret shared by all nodes: signs sessions, encrypts gossip, authenticates node-to-node traffic")
	doc("secret", "S", "a public insecure value (see below), with a warning")
	fs.Float64Var(&cfg.RateLimit, "rate-limit", cfg.RateLimit, "frames per second a connection may send, bursts of max(110, 2N); 0 turns the limit off")
	doc("rate-limit", "N", "")
	fs.IntVar(&cfg.History, "history", cfg.History, "messages retained per room and per DM inbox")
	doc("history", "N", "")
	fs.DurationVar(&cfg.HistoryAge, "history-age", cfg.HistoryAge, "also drop retained messages older than this, e.g. 72h")
	doc("history-age", "DUR", "0 (no age limit)")
	fs.Var(bytesValue{&cfg.MaxFrame}, "max-frame", "largest WebSocket frame a client may send (bytes, or with KiB/MiB)")
	doc("max-frame", "BYTES", "")
	queue := int64(cfg.QueueBytes)
	fs.Var(queueValue{&queue, &cfg.QueueBytes}, "queue-bytes", "bound of each connection's outbound queue; a client this far behind is disconnected and resumes from history")
	doc("queue-bytes", "BYTES", "")
	fs.Var(listValue{&cfg.Origins}, "origins", "comma-separated extra browser origins allowed on /ws, e.g. https://chat.example.com")
	doc("origins", "LIST", "none (the request's own host and the cluster's node URLs)")
	fs.StringVar(&cfg.CookieDomain, "cookie-domain", cfg.CookieDomain, "parent domain for the session cookie, so nodes on sibling host names share it")
	doc("cookie-domain", "DOMAIN", "none (the cookie belongs to the host that set it)")
	fs.StringVar(&cfg.AdvertiseHTTP, "advertise-http", cfg.AdvertiseHTTP, "HTTP base URL other nodes and clients use to reach this node")
	doc("advertise-http", "URL", "from --http; a wildcard host becomes the hostname's first non-loopback IPv4, else 127.0.0.1")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "mesh broker: keep history on disk in DIR/history.db, so a restart of the whole cluster keeps it")
	doc("data", "DIR", "none (history in memory only)")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", cfg.DebugAddr, "serve the Go profiler (/debug/pprof/) on this separate listener; keep it on loopback or a private network")
	doc("debug-addr", "ADDR", "none (off)")
	fs.Var(levelValue{&cfg.LogLevel}, "log-level", "log level: debug, info, warn or error")
	doc("log-level", "LEVEL", "")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	doc("log-format", "FORMAT", "")
	return docs
}

// queueValue is a bytesValue that also stores into an int.
type queueValue struct {
	n   *int64
	dst *int
}

func (v queueValue) String() string {
	if v.n == nil {
		return "0"
	}
	return formatBytes(*v.n)
}

func (v queueValue) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("bad size %q: too large", s)
	}
	*v.n, *v.dst = n, int(n)
	return nil
}

// defaultConfig is Config with every flag at its default.
func defaultConfig() Config {
	return Config{
		HTTPAddr:   defaultHTTPAddr,
		GossipAddr: defaultGossipAddr,
		Broker:     defaultBroker,
		RateLimit:  defaultRateLimit,
		History:    defaultHistory,
		MaxFrame:   defaultMaxFrame,
		QueueBytes: defaultQueueBytes,
		LogLevel:   slog.LevelInfo,
		LogFormat:  "text",
	}
}

// envName is the environment variable a flag reads.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseServe turns serve's arguments and environment into a validated
// Config. A flag given on the command line wins over its environment
// variable; an empty environment variable counts as unset. With -h/--help it
// prints the usage to out and returns flag.ErrHelp.
func parseServe(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("meshchat serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	docs := serveFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printServeUsage(out, fs, docs)
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs, lookupEnv); err != nil {
		return Config{}, err
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// applyEnv sets every flag not given on the command line from its
// environment variable, through the flag's own parser so both spellings
// accept the same values.
func applyEnv(fs *flag.FlagSet, lookupEnv func(string) (string, bool)) error {
	if lookupEnv == nil {
		return nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := envName(f.Name)
		v, ok := lookupEnv(name)
		if !ok || v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("config: %s=%q: %w", name, v, e)
		}
	})
	return err
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// validate checks a Config; errors name the flag at fault.
func (c *Config) validate() error {
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
	switch c.Broker {
	case "mesh":
	case "redis":
		if c.RedisURL == "" {
			return fmt.Errorf("config: --broker redis needs --redis URL (or %s)", envName("redis"))
		}
	default:
		return fmt.Errorf("config: --broker %q: want mesh or redis", c.Broker)
	}
	if c.RedisURL != "" {
		if _, err := goredis.ParseURL(c.RedisURL); err != nil {
			return fmt.Errorf("config: --redis %q: %w", c.RedisURL, err)
		}
	}
	if c.Name != "" && !nodeNameRE.MatchString(c.Name) {
		return fmt.Errorf("config: --name %q: want 1-64 of letters, digits, '_', '.', ':', '-'", c.Name)
	}
	if math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) || c.RateLimit < 0 {
		return fmt.Errorf("config: --rate-limit %v: want a number >= 0", c.RateLimit)
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
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: --log-format %q: want text or json", c.LogFormat)
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

// printServeUsage writes serve's help: every flag with its environment
// variable and default.
func printServeUsage(w io.Writer, fs *flag.FlagSet, docs []flagDoc) {
	fmt.Fprint(w, `Usage: meshchat serve [flags]

Starts one node of a meshchat cluster. Every flag also reads the environment
variable shown (MESHCHAT_ + upper-case name, '-' as '_'); a flag given on the
command line wins, an empty variable counts as unset.

Flags:
`)
	for _, d := range docs {
		f := fs.Lookup(d.name)
		def := d.def
		if def == "" {
			def = f.DefValue
		}
		fmt.Fprintf(w, "  --%s %s\n        %s\n        env %s, default %s\n", f.Name, d.arg, f.Usage, envName(f.Name), def)
	}
	fmt.Fprintf(w, `
The default secret is the public string %q.
It lets --join work out of the box and protects nothing: set --secret to a
long random value shared by every node before exposing a cluster.
`, DefaultSecret)
}

// defaultName derives a node name from the hostname and both ports, so
// several nodes on one host get distinct names without configuration.
func defaultName(hostname string, httpPort, gossipPort int) string {
	var b strings.Builder
	for _, r := range hostname {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.':
			// The first label is enough to tell hosts apart in practice
			// and keeps names short.
			goto done
		default:
			b.WriteByte('-')
		}
	}
done:
	host := b.String()
	if host == "" {
		host = "node"
	}
	suffix := fmt.Sprintf("-%d-%d", httpPort, gossipPort)
	if max := 64 - len(suffix); len(host) > max {
		host = host[:max]
	}
	return host + suffix
}

// advertiseURL derives the HTTP base URL others use to reach a listener
// bound at addr (the real, bound address). A wildcard host (empty, 0.0.0.0,
// ::) is replaced by the first non-loopback address the machine's hostname
// resolves to, else 127.0.0.1: good enough on one host or a flat network;
// across NAT or behind a proxy, set --advertise-http.
func advertiseURL(addr string, hostname func() (string, error), lookup func(string) ([]string, error)) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if h, err := hostname(); err == nil && h != "" {
			if addrs, err := lookup(h); err == nil {
				for _, a := range addrs {
					if ip := net.ParseIP(a); ip != nil && !ip.IsLoopback() && ip.To4() != nil {
						host = a
						break
					}
				}
			}
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// newLogger builds the serve command's logger on w.
func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// rateBurst is the burst allowed at a sustained rate: two seconds' worth,
// never fewer than minRateBurst (the contract's 100 frames, plus headroom).
func rateBurst(rate float64) int {
	if rate <= 0 {
		return 0
	}
	b := math.Ceil(2 * rate)
	if b < minRateBurst {
		return minRateBurst
	}
	if b > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(b)
}
