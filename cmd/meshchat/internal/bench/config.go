package bench

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Scenario is one named load shape. Flags given on the command line
// override its values.
type Scenario struct {
	Name string
	// Clients is the number of WebSocket connections (one user each).
	Clients int
	// Rooms is the number of rooms; client i joins room i mod Rooms.
	Rooms int
	// Publishers is the number of clients that also send; publisher p is
	// client p, so publishers spread over rooms like clients do.
	Publishers int
	// Rate is messages per second per publisher.
	Rate float64
	// Size is the message text length in bytes.
	Size int
	// Duration is the measured window; Warmup runs the same load before it
	// without recording. For idle, Warmup is how long the connections sit
	// before memory is sampled.
	Duration, Warmup time.Duration
	// SlowClients is how many clients (the last ones, never publishers)
	// read their socket slowly during the load, so the server's
	// slow-consumer shedding is exercised.
	SlowClients int
	// Idle means no publishers: the scenario measures memory only.
	Idle bool
}

// Defaults shared by every scenario: short enough that
// `--compare mesh,redis --scenario all` finishes in a few minutes.
const (
	defaultDuration = 10 * time.Second
	defaultWarmup   = 2 * time.Second
	defaultSize     = 100
	defaultNodes    = 3
)

// scenarios returns the scenario table. It is a function, not a package
// variable, so that no caller can mutate shared state.
func scenarios() []Scenario {
	return []Scenario{
		{Name: "fanout", Clients: 300, Rooms: 1, Publishers: 10, Rate: 20, Size: defaultSize, Duration: defaultDuration, Warmup: defaultWarmup},
		// Saturate includes a few slow consumers: the excess must be shed by
		// disconnecting them, not by the nodes' memory growing.
		{Name: "saturate", Clients: 300, Rooms: 1, Publishers: 10, Rate: 100, Size: defaultSize, Duration: defaultDuration, Warmup: defaultWarmup, SlowClients: 5},
		{Name: "rooms", Clients: 3000, Rooms: 100, Publishers: 300, Rate: 2, Size: defaultSize, Duration: defaultDuration, Warmup: defaultWarmup},
		// Idle spreads connections over rooms of ten so that joining does
		// not turn into an N² presence storm that would dominate setup.
		{Name: "idle", Clients: 1000, Rooms: 100, Publishers: 0, Rate: 0, Size: defaultSize, Duration: 0, Warmup: defaultWarmup, Idle: true},
	}
}

// scenarioNames lists the table's names in order.
func scenarioNames() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.Name)
	}
	return names
}

// lookupScenario finds a scenario by name.
func lookupScenario(name string) (Scenario, error) {
	for _, s := range scenarios() {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("%w %q (have %s, all)", ErrUnknownScenario, name, strings.Join(scenarioNames(), ", "))
}

// Config is a parsed command line. Zero values are filled by parseArgs
// from the scenario table and the defaults written next to each field.
type Config struct {
	// Targets are HTTP base URLs of the cluster's nodes; clients are spread
	// over them round-robin. Empty when Spawn is set.
	Targets []string
	// Scenarios to run, in order (from --scenario, default fanout; "all"
	// means every scenario). Each carries the flag overrides already.
	Scenarios []Scenario
	// Spawn is "mesh" or "redis": start a throwaway cluster of Nodes
	// processes of Binary (and a redis-server for redis). Empty: use
	// Targets.
	Spawn string
	// Compare lists brokers to spawn in turn with the same scenarios
	// ("mesh,redis"); it implies spawning.
	Compare []string
	// Nodes is the spawned cluster size (default 3).
	Nodes int
	// Binary is the meshchat binary to spawn (default: this executable).
	Binary string
	// RedisServer is the redis-server binary (default: from PATH).
	RedisServer string
	// JSONFile, HTMLFile and SVGFile receive the results when set.
	JSONFile, HTMLFile, SVGFile string
	// Progress forces the stderr progress bar even when stderr is not a
	// terminal.
	Progress bool
	// Strict makes Main fail with ErrCheckFailed when any run lost or
	// duplicated deliveries.
	Strict bool
	// ConnectConcurrency bounds simultaneous logins and upgrades (default
	// 64) so setup does not measure a self-inflicted thundering herd.
	ConnectConcurrency int
	// ReadyTimeout bounds waiting for a spawned cluster (default 30s) and
	// for all clients to join (the same bound, plus 10s per 1000 clients).
	ReadyTimeout time.Duration
	// Drain bounds how long after the last send the run waits for
	// outstanding deliveries (default 10s; it ends as soon as all arrived,
	// or nothing arrived for 2s).
	Drain time.Duration
	// KeepLogs keeps the spawned processes' log directory.
	KeepLogs bool
	// CPUProfile receives a pprof CPU profile of the generator itself.
	CPUProfile string
	// ProfileDir, with a spawned cluster, receives a pprof profile of
	// every node per run: CPU over the measured window, or the heap at
	// the idle sample for an idle scenario. Empty: none.
	ProfileDir string
}

// brokers returns the brokers to spawn, one run set per entry; nil means
// use Targets.
func (c Config) brokers() []string {
	if len(c.Compare) > 0 {
		return c.Compare
	}
	if c.Spawn != "" {
		return []string{c.Spawn}
	}
	return nil
}

// usageText documents the flags; flag's own listing follows it.
const usageText = `usage: meshchat bench [flags]

Load-tests a meshchat cluster through its public HTTP and WebSocket API.

  meshchat bench --targets http://127.0.0.1:8080,http://127.0.0.1:8081 --scenario fanout
  meshchat bench --spawn mesh --nodes 3 --scenario rooms --json out.json
  meshchat bench --compare mesh,redis --scenario all --html report.html

Scenarios (flags override their values):
  fanout    300 clients, 1 room, 10 publishers x 20 msg/s
  saturate  300 clients, 1 room, 10 publishers x 100 msg/s, 5 slow clients
  rooms     3000 clients, 100 rooms, 300 publishers x 2 msg/s
  idle      --clients connections (default 1000), memory only

`

// parseArgs parses the bench command line.
func parseArgs(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("meshchat bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	var (
		targets     = fs.String("targets", "", "comma-separated HTTP base URLs of the nodes to load (they must run --auth open and a --login-limit above the clients per minute: the bench logs every user in by name, from this one address)")
		scenario    = fs.String("scenario", "fanout", "scenario name, comma list, or all")
		clients     = fs.Int("clients", 0, "WebSocket connections (scenario value when 0)")
		rooms       = fs.Int("rooms", 0, "rooms; client i joins room i mod rooms")
		publishers  = fs.Int("publishers", 0, "clients that also send")
		rate        = fs.Float64("rate", 0, "messages per second per publisher")
		size        = fs.Int("size", 0, "message text bytes")
		slow        = fs.Int("slow-clients", 0, "clients (never publishers) that read slowly during the load")
		duration    = fs.Duration("duration", 0, "measured window (scenario value, 10s, when 0)")
		warmup      = fs.Duration("warmup", 0, "unmeasured load before the window (2s)")
		jsonFile    = fs.String("json", "", "write results as JSON to this file")
		htmlFile    = fs.String("html", "", "write a self-contained HTML report to this file")
		svgFile     = fs.String("svg", "", "write an SVG chart to this file")
		compare     = fs.String("compare", "", "spawn each broker in turn (mesh,redis) and print one side-by-side table")
		spawn       = fs.String("spawn", "", "start a throwaway cluster: mesh or redis (its nodes run --auth open with no practical --login-limit: the bench logs every user in by name, from this one address)")
		nodes       = fs.Int("nodes", defaultNodes, "nodes to spawn")
		binary      = fs.String("binary", "", "meshchat binary to spawn (default: this executable)")
		redisServer = fs.String("redis-server", "", "redis-server binary (default: from PATH)")
		progress    = fs.Bool("progress", false, "show the progress bar even when stderr is not a terminal")
		strict      = fs.Bool("strict", false, "exit with an error when any delivery was lost or duplicated")
		concurrency = fs.Int("connect-concurrency", 64, "simultaneous logins and upgrades during setup")
		readyTO     = fs.Duration("ready-timeout", 30*time.Second, "bound on cluster readiness and on joining")
		drain       = fs.Duration("drain", 10*time.Second, "bound on waiting for outstanding deliveries")
		keepLogs    = fs.Bool("keep-logs", false, "keep spawned processes' logs")
		cpuProfile  = fs.String("cpuprofile", "", "write the generator's own CPU profile to this file")
		profileDir  = fs.String("profile", "", "spawned clusters: write each node's CPU profile of the measured window (heap profile for idle) into this directory")
	)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := Config{
		Spawn:              *spawn,
		Nodes:              *nodes,
		Binary:             *binary,
		RedisServer:        *redisServer,
		JSONFile:           *jsonFile,
		HTMLFile:           *htmlFile,
		SVGFile:            *svgFile,
		Progress:           *progress,
		Strict:             *strict,
		ConnectConcurrency: *concurrency,
		ReadyTimeout:       *readyTO,
		Drain:              *drain,
		KeepLogs:           *keepLogs,
		CPUProfile:         *cpuProfile,
		ProfileDir:         *profileDir,
	}
	for _, t := range splitList(*targets) {
		u, err := normalizeTarget(t)
		if err != nil {
			return Config{}, err
		}
		cfg.Targets = append(cfg.Targets, u)
	}
	cfg.Compare = splitList(*compare)

	var names []string
	for _, n := range splitList(*scenario) {
		if n == "all" {
			names = append(names, scenarioNames()...)
			continue
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return Config{}, fmt.Errorf("%w: empty --scenario", ErrUsage)
	}
	// The scenario flags given on the command line override each
	// scenario's own values.
	overrides := map[string]func(*Scenario){
		"clients":      func(s *Scenario) { s.Clients = *clients },
		"rooms":        func(s *Scenario) { s.Rooms = *rooms },
		"publishers":   func(s *Scenario) { s.Publishers = *publishers },
		"rate":         func(s *Scenario) { s.Rate = *rate },
		"size":         func(s *Scenario) { s.Size = *size },
		"duration":     func(s *Scenario) { s.Duration = *duration },
		"warmup":       func(s *Scenario) { s.Warmup = *warmup },
		"slow-clients": func(s *Scenario) { s.SlowClients = *slow },
	}
	for _, n := range names {
		s, err := lookupScenario(n)
		if err != nil {
			return Config{}, err
		}
		for name, apply := range overrides {
			if set[name] {
				apply(&s)
			}
		}
		if s.Idle {
			// Idle measures memory only, whatever the flags say.
			s.Publishers, s.Rate, s.SlowClients = 0, 0, 0
		}
		if !set["slow-clients"] && s.SlowClients > s.Clients-s.Publishers {
			// A scenario's slow clients scale down with a smaller
			// --clients rather than failing.
			s.SlowClients = max(0, s.Clients-s.Publishers)
		}
		if s.Rooms > s.Clients && s.Clients > 0 {
			// A scenario's room count scales down with a smaller
			// --clients rather than failing, unless --rooms was explicit.
			if !set["rooms"] {
				s.Rooms = max(1, s.Clients/10)
			}
		}
		cfg.Scenarios = append(cfg.Scenarios, s)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	if cfg.brokers() != nil {
		if cfg.Binary == "" {
			exe, err := os.Executable()
			if err != nil {
				return Config{}, fmt.Errorf("bench: finding own executable for --binary: %w", err)
			}
			cfg.Binary = exe
		}
		if cfg.RedisServer == "" && slices.Contains(cfg.brokers(), "redis") {
			p, err := exec.LookPath("redis-server")
			if err != nil {
				p = "/usr/bin/redis-server"
			}
			cfg.RedisServer = p
		}
	}
	return cfg, nil
}

// validate checks values that cannot work.
func (c Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, a...)...)
	}
	if c.Spawn != "" && len(c.Compare) > 0 {
		return bad("--spawn and --compare are exclusive (--compare spawns each broker)")
	}
	for _, b := range append([]string{c.Spawn}, c.Compare...) {
		if b != "" && b != "mesh" && b != "redis" {
			return bad("unknown broker %q (want mesh or redis)", b)
		}
	}
	if c.brokers() != nil && len(c.Targets) > 0 {
		return bad("--targets cannot be combined with --spawn or --compare")
	}
	if c.brokers() == nil && len(c.Targets) == 0 {
		return ErrNoTargets
	}
	if c.ProfileDir != "" && c.brokers() == nil {
		return bad("--profile needs --spawn or --compare (the nodes are started with a profiler listener)")
	}
	if c.Nodes < 1 || c.Nodes > 64 {
		return bad("--nodes %d out of range 1..64", c.Nodes)
	}
	if c.ConnectConcurrency < 1 {
		return bad("--connect-concurrency must be at least 1")
	}
	if c.ReadyTimeout <= 0 || c.Drain < 0 {
		return bad("--ready-timeout must be positive and --drain not negative")
	}
	for _, s := range c.Scenarios {
		switch {
		case s.Clients < 1:
			return bad("%s: --clients must be at least 1", s.Name)
		case s.Rooms < 1 || s.Rooms > s.Clients:
			return bad("%s: --rooms %d must be in 1..clients (%d)", s.Name, s.Rooms, s.Clients)
		case s.Publishers < 0 || s.Publishers > s.Clients:
			return bad("%s: --publishers %d must be in 0..clients (%d)", s.Name, s.Publishers, s.Clients)
		case s.SlowClients < 0 || s.SlowClients > s.Clients-s.Publishers:
			return bad("%s: --slow-clients %d must be in 0..clients-publishers (%d)", s.Name, s.SlowClients, s.Clients-s.Publishers)
		case !s.Idle && s.Publishers > 0 && s.Rate <= 0:
			return bad("%s: --rate must be positive", s.Name)
		case s.Rate > 100000:
			return bad("%s: --rate %v is above 100000 msg/s per publisher", s.Name, s.Rate)
		case s.Size < minTextSize || s.Size > 1<<20:
			return bad("%s: --size %d out of range %d..%d", s.Name, s.Size, minTextSize, 1<<20)
		case s.Duration < 0 || s.Warmup < 0:
			return bad("%s: --duration and --warmup must not be negative", s.Name)
		case !s.Idle && s.Duration == 0:
			return bad("%s: --duration must be positive", s.Name)
		}
	}
	return nil
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// normalizeTarget accepts "host:port" or an http(s) URL and returns the
// base URL without a trailing slash.
func normalizeTarget(t string) (string, error) {
	if !strings.Contains(t, "://") {
		t = "http://" + t
	}
	u, err := url.Parse(t)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%w: bad target %q (want http://host:port)", ErrUsage, t)
	}
	return strings.TrimRight(u.String(), "/"), nil
}
