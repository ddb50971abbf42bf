package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/meshchat/meshchat/cmd/meshchat/node"
)

// envPrefix is prepended to a flag's upper-cased name to find its
// environment variable.
const envPrefix = "MESHCHAT_"

// serveConfig is the serve command line: a node's Config plus how to log.
type serveConfig struct {
	node.Config
	// RateFlag is --rate-limit as typed, where 0 turns the limit off;
	// parseServe turns it into Config.RateLimit.
	RateFlag float64
	// RoomFlag is --room-limit as typed, where 0 turns the limit off;
	// parseServe turns it into Config.RoomsPerHour.
	RoomFlag int
	// LogLevel and LogFormat ("text" or "json") shape the logger that
	// newLogger builds.
	LogLevel  slog.Level
	LogFormat string
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
// KiB/MiB/GiB (or k/m/g, KB/MB/GB, all powers of 1024) suffix. max bounds
// it; 0 is no bound.
type bytesValue[T int | int64] struct {
	dst *T
	max int64
}

func (v bytesValue[T]) String() string {
	if v.dst == nil {
		return "0"
	}
	return formatBytes(int64(*v.dst))
}

func (v bytesValue[T]) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	if v.max > 0 && n > v.max {
		return fmt.Errorf("bad size %q: too large", s)
	}
	*v.dst = T(n)
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
func serveFlags(fs *flag.FlagSet, cfg *serveConfig) []flagDoc {
	var docs []flagDoc
	doc := func(name, arg, def string) { docs = append(docs, flagDoc{name, arg, def}) }

	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP listener for UI, API, WebSocket and node-to-node traffic")
	doc("http", "ADDR", "")
	fs.StringVar(&cfg.GossipAddr, "gossip", cfg.GossipAddr, "memberlist bind address, TCP and UDP")
	doc("gossip", "ADDR", "")
	fs.Var(listValue{&cfg.Join}, "join", "comma-separated host:port gossip seeds; a node ignores itself in the list, so every node can be given the same one")
	doc("join", "LIST", "none (a cluster of one)")
	fs.IntVar(&cfg.Expect, "expect", cfg.Expect, "nodes that must be alive, this one included, before the node reports ready")
	doc("expect", "N", "2 with --join (other than itself), else 1")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "message broker: mesh (peer-to-peer) or redis")
	doc("broker", "NAME", "")
	fs.StringVar(&cfg.RedisURL, "redis", cfg.RedisURL, "Redis URL redis://[:password@]host:port/db; when set, sessions live in Redis whatever the broker")
	doc("redis", "URL", "none")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "node name, unique in the cluster")
	doc("name", "ID", "<hostname>-<http port>-<gossip port>")
	fs.StringVar(&cfg.Secret, "secret", cfg.Secret, "cluster secret shared by all nodes: signs sessions, encrypts gossip, authenticates node-to-node traffic")
	doc("secret", "S", "none: the node makes a random secret of its own (see below)")
	fs.StringVar(&cfg.Auth, "auth", cfg.Auth, "how users log in: password (accounts), open (a bare name, for demos and benchmarks) or jwt (tokens your app signs)")
	doc("auth", "MODE", "")
	fs.StringVar(&cfg.JWTKey, "jwt-key", cfg.JWTKey, "--auth jwt: HMAC secret for HS256 tokens, or a PEM public key (or a file holding one) for RS256/ES256")
	doc("jwt-key", "K", "none")
	fs.Var(listValue{&cfg.Admins}, "admins", "comma-separated user names that may ban and unban users and delete any message")
	doc("admins", "LIST", "none")
	fs.Float64Var(&cfg.AuthLimits.AttemptsPerMinute, "login-limit", 0, "login, registration and password attempts per minute from one client address (bursts of as many); behind a proxy every client shares its address")
	doc("login-limit", "N", "30")
	fs.Float64Var(&cfg.AuthLimits.RegistrationsPerMinute, "register-limit", 0, "new accounts per minute from one client address (bursts of 5 times as many)")
	doc("register-limit", "N", "2")
	fs.Float64Var(&cfg.RateFlag, "rate-limit", cfg.RateFlag, "frames per second a connection may send, bursts of max(110, 2N); 0 turns the limit off")
	doc("rate-limit", "N", "")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", cfg.MaxConnsPerIP, "TCP connections one client address may hold open on the HTTP listener (the cluster's nodes are exempt); behind a proxy every client shares its address: raise it or use 0; 0 turns the cap off")
	doc("max-conns-per-ip", "N", "")
	fs.StringVar(&cfg.APIKey, "api-key", cfg.APIKey, "enables the server API (/api/server/...); requests carry Authorization: Bearer K")
	doc("api-key", "K", "none (the server API is off)")
	fs.IntVar(&cfg.History, "history", cfg.History, "messages retained per room and per DM inbox")
	doc("history", "N", "")
	fs.DurationVar(&cfg.HistoryAge, "history-age", cfg.HistoryAge, "also drop retained messages older than this, e.g. 72h")
	doc("history-age", "DUR", "0 (no age limit)")
	fs.Var(bytesValue[int64]{dst: &cfg.HistoryBudget}, "history-budget", "bytes of history the mesh broker keeps in memory, all rooms and inboxes together; over it the least recently used are evicted (to disk with --data, else dropped)")
	doc("history-budget", "BYTES", "a quarter of the memory (cgroup limit or total), within 64MiB..4GiB")
	fs.IntVar(&cfg.RoomFlag, "room-limit", cfg.RoomFlag, "new rooms one user may create per hour on this node; 0 turns the limit off")
	doc("room-limit", "N", "")
	fs.Var(bytesValue[int64]{dst: &cfg.MaxFrame}, "max-frame", "largest WebSocket frame a client may send (bytes, or with KiB/MiB)")
	doc("max-frame", "BYTES", "")
	fs.Var(bytesValue[int]{dst: &cfg.QueueBytes, max: math.MaxInt32}, "queue-bytes", "bound of each connection's outbound queue; a client this far behind is disconnected and resumes from history")
	doc("queue-bytes", "BYTES", "")
	fs.Var(listValue{&cfg.Origins}, "origins", "comma-separated extra browser origins allowed on /ws, e.g. https://chat.example.com")
	doc("origins", "LIST", "none (the request's own host and the cluster's node URLs)")
	fs.StringVar(&cfg.CookieDomain, "cookie-domain", cfg.CookieDomain, "parent domain for the session cookie, so nodes on sibling host names share it")
	doc("cookie-domain", "DOMAIN", "none (the cookie belongs to the host that set it)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "PEM certificate (chain) file: the HTTP listener serves HTTPS and WSS, and mesh links dial https; reloaded when the file changes; needs --tls-key")
	doc("tls-cert", "FILE", "none (plain HTTP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "PEM private key file of --tls-cert")
	doc("tls-key", "FILE", "none")
	fs.StringVar(&cfg.TLSCA, "tls-ca", cfg.TLSCA, "PEM CA file that, with the system roots, must verify the certificates of peers the mesh dials")
	doc("tls-ca", "FILE", "none (a peer certificate that does not verify is accepted with a warning: mesh frames are sealed with the secret)")
	fs.StringVar(&cfg.ClusterName, "cluster-name", cfg.ClusterName, "name of the cluster, the same on every node: nodes with another name never join it nor link to it, even with the same --secret")
	doc("cluster-name", "NAME", "none (an empty name)")
	fs.StringVar(&cfg.AdvertiseHTTP, "advertise-http", cfg.AdvertiseHTTP, "HTTP base URL other nodes and clients use to reach this node")
	doc("advertise-http", "URL", "from --http; a wildcard host becomes the hostname's first non-loopback IPv4, else 127.0.0.1")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "keep history on disk in DIR/history.db (mesh broker), so a restart of the whole cluster keeps it, and the peers the node knew, to rejoin them at start")
	doc("data", "DIR", "none (history in memory only)")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", cfg.DebugAddr, "serve the Go profiler (/debug/pprof/) on this separate listener; keep it on loopback or a private network")
	doc("debug-addr", "ADDR", "none (off)")
	fs.BoolVar(&cfg.DebugPublic, "debug-public", cfg.DebugPublic, "allow --debug-addr on an address other hosts can reach")
	doc("debug-public", "", "false (loopback only)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "serve the Prometheus metrics (/metrics) on this separate listener instead of the HTTP one")
	doc("metrics-addr", "ADDR", "none (/metrics on the HTTP listener)")
	fs.Var(levelValue{&cfg.LogLevel}, "log-level", "log level: debug, info, warn or error")
	doc("log-level", "LEVEL", "")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	doc("log-format", "FORMAT", "")
	return docs
}

// defaultServeConfig is serveConfig with every flag at its default.
func defaultServeConfig() serveConfig {
	c := node.DefaultConfig()
	return serveConfig{Config: c, RateFlag: c.RateLimit, RoomFlag: c.RoomsPerHour, LogLevel: slog.LevelInfo, LogFormat: "text"}
}

// envName is the environment variable a flag reads.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseServe turns serve's arguments and environment into a validated
// serveConfig. A flag given on the command line wins over its environment
// variable; an empty environment variable counts as unset. With -h/--help
// it prints the usage to out and returns flag.ErrHelp.
func parseServe(args []string, lookupEnv func(string) (string, bool), out io.Writer) (serveConfig, error) {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet("meshchat serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	docs := serveFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printServeUsage(out, fs, docs)
			return serveConfig{}, flag.ErrHelp
		}
		return serveConfig{}, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return serveConfig{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs, lookupEnv); err != nil {
		return serveConfig{}, err
	}
	// Every flag starts at its default, so a zero here was typed: on the
	// command line it is an error, where node.Config would read it as
	// "default".
	switch {
	case cfg.History == 0:
		return serveConfig{}, errors.New("config: --history 0: want at least 1")
	case cfg.MaxFrame == 0:
		return serveConfig{}, errors.New("config: --max-frame 0: want at least 256 bytes")
	case cfg.QueueBytes == 0:
		return serveConfig{}, fmt.Errorf("config: --queue-bytes 0: want at least --max-frame (%d)", cfg.MaxFrame)
	case cfg.MaxConnsPerIP < 0:
		return serveConfig{}, fmt.Errorf("config: --max-conns-per-ip %d: want a number >= 0", cfg.MaxConnsPerIP)
	case math.IsNaN(cfg.RateFlag) || math.IsInf(cfg.RateFlag, 0) || cfg.RateFlag < 0:
		return serveConfig{}, fmt.Errorf("config: --rate-limit %v: want a number >= 0", cfg.RateFlag)
	}
	cfg.RateLimit = cfg.RateFlag
	switch {
	case cfg.RoomFlag < 0:
		return serveConfig{}, fmt.Errorf("config: --room-limit %d: want >= 0", cfg.RoomFlag)
	case cfg.RoomFlag == 0:
		cfg.RoomsPerHour = node.NoRateLimit
	default:
		cfg.RoomsPerHour = cfg.RoomFlag
	}
	for _, l := range []struct {
		flag string
		v    float64
	}{{"--login-limit", cfg.AuthLimits.AttemptsPerMinute}, {"--register-limit", cfg.AuthLimits.RegistrationsPerMinute}} {
		if math.IsNaN(l.v) || math.IsInf(l.v, 0) || l.v < 0 {
			return serveConfig{}, fmt.Errorf("config: %s %v: want a number >= 0", l.flag, l.v)
		}
	}
	cfg.AuthLimits.AttemptBurst = cfg.AuthLimits.AttemptsPerMinute
	cfg.AuthLimits.RegistrationBurst = 5 * cfg.AuthLimits.RegistrationsPerMinute
	if cfg.RateFlag == 0 {
		cfg.RateLimit = node.NoRateLimit // the contract's "0 turns the limit off"
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = node.NoConnLimit
	}
	if err := cfg.Validate(); err != nil {
		return serveConfig{}, err
	}
	switch cfg.LogFormat {
	case "text", "json":
	default:
		return serveConfig{}, fmt.Errorf("config: --log-format %q: want text or json", cfg.LogFormat)
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

// printServeUsage writes serve's help: every flag with its environment
// variable and default.
func printServeUsage(w io.Writer, fs *flag.FlagSet, docs []flagDoc) {
	fmt.Fprint(w, `Usage: meshchat serve [flags]

Starts one node of a meshchat cluster. Every flag also reads the environment
variable shown (MESHCHAT_ + upper-case name, '-' as '_'); a flag given on the
command line wins, an empty variable counts as unset.

Flags:
`)
	printFlags(w, fs, docs, true)
	fmt.Fprint(w, `
Without --secret a node makes a random secret of its own (kept in the
--data directory when there is one): fine for a node alone, and --join is
refused. Give every node of a cluster the same long random secret, e.g.
MESHCHAT_SECRET="$(openssl rand -hex 32)".
`)
}

// demoConfig is the demo command line.
type demoConfig struct {
	Nodes    int
	Broker   string
	RedisURL string
	Host     string
	BasePort int
	Secret   string
	Auth     string
	LogLevel slog.Level
}

func parseDemo(args []string, lookupEnv func(string) (string, bool), out io.Writer) (demoConfig, error) {
	dc := demoConfig{Nodes: 3, Broker: "mesh", Host: "127.0.0.1", BasePort: 8081, Auth: "password", LogLevel: slog.LevelWarn}
	fs := flag.NewFlagSet("meshchat demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&dc.Nodes, "nodes", dc.Nodes, "number of nodes")
	fs.StringVar(&dc.Broker, "broker", dc.Broker, "mesh or redis")
	fs.StringVar(&dc.RedisURL, "redis", dc.RedisURL, "Redis URL; needed with --broker redis")
	fs.StringVar(&dc.Host, "host", dc.Host, "address every node listens on")
	fs.IntVar(&dc.BasePort, "base-port", dc.BasePort, "first HTTP port; gossip ports start at base-port+1000")
	fs.StringVar(&dc.Secret, "secret", dc.Secret, "cluster secret")
	fs.StringVar(&dc.Auth, "auth", dc.Auth, "password (users register accounts) or open (a bare name logs in)")
	fs.Var(levelValue{&dc.LogLevel}, "log-level", "log level: debug, info, warn or error")
	docs := []flagDoc{
		{"nodes", "N", ""}, {"broker", "NAME", ""}, {"redis", "URL", "none"}, {"host", "HOST", ""},
		{"base-port", "P", ""}, {"secret", "S", "a random one, shared by the demo's nodes"}, {"auth", "MODE", ""}, {"log-level", "LEVEL", ""},
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, `Usage: meshchat demo [flags]

Runs several nodes in this one process, joined into one cluster, on
consecutive free ports of --host: HTTP from --base-port, gossip from
--base-port+1000. Prints the URLs to open; Ctrl-C stops every node.
--broker, --redis and --secret also read MESHCHAT_BROKER, MESHCHAT_REDIS
and MESHCHAT_SECRET.

Flags:
`)
			printFlags(out, fs, docs, false)
			return demoConfig{}, flag.ErrHelp
		}
		return demoConfig{}, fmt.Errorf("demo: %w", err)
	}
	if fs.NArg() > 0 {
		return demoConfig{}, fmt.Errorf("demo: unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, name := range []string{"broker", "redis", "secret"} {
		if v, ok := lookupEnv(envName(name)); ok && v != "" && !given[name] {
			_ = fs.Set(name, v)
		}
	}
	switch {
	case dc.Nodes < 1 || dc.Nodes > 50:
		return demoConfig{}, fmt.Errorf("demo: --nodes %d: want 1 to 50", dc.Nodes)
	case dc.BasePort < 1 || dc.BasePort+1000+dc.Nodes*4 > 65535:
		return demoConfig{}, fmt.Errorf("demo: --base-port %d out of range", dc.BasePort)
	case dc.Broker != "mesh" && dc.Broker != "redis":
		return demoConfig{}, fmt.Errorf("demo: --broker %q: want mesh or redis", dc.Broker)
	case dc.Broker == "redis" && dc.RedisURL == "":
		return demoConfig{}, errors.New("demo: --broker redis needs --redis URL (or MESHCHAT_REDIS)")
	}
	return dc, nil
}

// printFlags lists docs' flags with their defaults and, when withEnv is
// set, their environment variables.
func printFlags(w io.Writer, fs *flag.FlagSet, docs []flagDoc, withEnv bool) {
	for _, d := range docs {
		f := fs.Lookup(d.name)
		def := cmp.Or(d.def, f.DefValue)
		if withEnv {
			fmt.Fprintf(w, "  --%s %s\n        %s\n        env %s, default %s\n", f.Name, d.arg, f.Usage, envName(f.Name), def)
		} else {
			fmt.Fprintf(w, "  --%s %s\n        %s (default %s)\n", f.Name, d.arg, f.Usage, def)
		}
	}
}

// usageError marks a parse error as the user's (exit code 2); help is
// not an error.
func usageError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// newLogger builds the serve command's logger on w.
func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
