package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// fakeNodeEnv makes the test binary act as a fake node, so --spawn can be
// exercised end to end (processes, readiness, /proc sampling) without the
// real server.
const fakeNodeEnv = "BENCH_TEST_FAKE_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(fakeNodeEnv) == "1" {
		os.Exit(fakeNodeMain(os.Args[1:]))
	}
	clustertest.VerifyOwnTestMain(m, clustertest.NetworkGoroutines...)
}

// fakeNodeMain serves the fake contract server on --http until SIGTERM,
// and Go's profiler on --debug-addr when given, as a node does.
func fakeNodeMain(args []string) int {
	var addr, debugAddr string
	for i, a := range args {
		if i+1 >= len(args) {
			break
		}
		switch a {
		case "--http":
			addr = args[i+1]
		case "--debug-addr":
			debugAddr = args[i+1]
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: newFakeServer(fakeOpts{}).handler()}
	go srv.Serve(l)
	if debugAddr != "" {
		dl, err := net.Listen("tcp", debugAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go http.Serve(dl, mux)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	srv.Close()
	return 0
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr error
		check   func(t *testing.T, c Config)
	}{
		{name: "default fanout", args: []string{"--targets", "127.0.0.1:8080"}, check: func(t *testing.T, c Config) {
			s := c.Scenarios[0]
			if len(c.Scenarios) != 1 || s.Name != "fanout" || s.Clients != 300 || s.Rooms != 1 || s.Publishers != 10 || s.Rate != 20 {
				t.Fatalf("scenario = %+v", c.Scenarios)
			}
			if s.Duration != 10*time.Second || s.Warmup != 2*time.Second {
				t.Fatalf("timing = %v + %v", s.Duration, s.Warmup)
			}
			if c.Targets[0] != "http://127.0.0.1:8080" || c.Nodes != 3 {
				t.Fatalf("targets %v nodes %d", c.Targets, c.Nodes)
			}
		}},
		{name: "all", args: []string{"--targets", "http://a:1/,http://b:2", "--scenario", "all"}, check: func(t *testing.T, c Config) {
			var names []string
			for _, s := range c.Scenarios {
				names = append(names, s.Name)
			}
			if strings.Join(names, ",") != "fanout,saturate,rooms,idle" {
				t.Fatalf("scenarios = %v", names)
			}
			if c.Targets[0] != "http://a:1" || c.Targets[1] != "http://b:2" {
				t.Fatalf("targets = %v", c.Targets)
			}
		}},
		{name: "saturate and rooms", args: []string{"--targets", "x:1", "--scenario", "saturate,rooms"}, check: func(t *testing.T, c Config) {
			if c.Scenarios[0].Rate != 100 || c.Scenarios[1].Clients != 3000 || c.Scenarios[1].Rooms != 100 || c.Scenarios[1].Publishers != 300 || c.Scenarios[1].Rate != 2 {
				t.Fatalf("scenarios = %+v", c.Scenarios)
			}
		}},
		{name: "flags override", args: []string{"--targets", "x:1", "--clients", "50", "--rooms", "5", "--publishers", "4", "--rate", "7", "--size", "200", "--duration", "3s", "--warmup", "0s"}, check: func(t *testing.T, c Config) {
			s := c.Scenarios[0]
			if s.Clients != 50 || s.Rooms != 5 || s.Publishers != 4 || s.Rate != 7 || s.Size != 200 || s.Duration != 3*time.Second || s.Warmup != 0 {
				t.Fatalf("scenario = %+v", s)
			}
		}},
		{name: "idle takes clients, never publishes", args: []string{"--targets", "x:1", "--scenario", "idle", "--clients", "40", "--publishers", "3"}, check: func(t *testing.T, c Config) {
			s := c.Scenarios[0]
			if !s.Idle || s.Clients != 40 || s.Publishers != 0 || s.Rooms != 4 {
				t.Fatalf("scenario = %+v", s)
			}
		}},
		{name: "idle default 1000", args: []string{"--targets", "x:1", "--scenario", "idle"}, check: func(t *testing.T, c Config) {
			if c.Scenarios[0].Clients != 1000 {
				t.Fatalf("clients = %d", c.Scenarios[0].Clients)
			}
		}},
		{name: "rooms scale down with clients", args: []string{"--targets", "x:1", "--scenario", "rooms", "--clients", "50", "--publishers", "20"}, check: func(t *testing.T, c Config) {
			if c.Scenarios[0].Rooms != 5 {
				t.Fatalf("rooms = %d", c.Scenarios[0].Rooms)
			}
		}},
		{name: "compare fills binary and redis", args: []string{"--compare", "mesh,redis", "--redis-server", "/x/redis-server"}, check: func(t *testing.T, c Config) {
			if len(c.brokers()) != 2 || c.Binary == "" || c.RedisServer != "/x/redis-server" {
				t.Fatalf("config = %+v", c)
			}
		}},
		{name: "spawn", args: []string{"--spawn", "redis", "--nodes", "2", "--binary", "/bin/x", "--profile", "p"}, check: func(t *testing.T, c Config) {
			if c.Spawn != "redis" || c.Nodes != 2 || c.Binary != "/bin/x" || c.RedisServer == "" || c.ProfileDir != "p" {
				t.Fatalf("config = %+v", c)
			}
		}},
		{name: "outputs", args: []string{"--targets", "x:1", "--json", "a.json", "--html", "a.html", "--svg", "a.svg", "--progress", "--strict"}, check: func(t *testing.T, c Config) {
			if c.JSONFile != "a.json" || c.HTMLFile != "a.html" || c.SVGFile != "a.svg" || !c.Progress || !c.Strict {
				t.Fatalf("config = %+v", c)
			}
		}},
		{name: "saturate has slow clients", args: []string{"--targets", "x:1", "--scenario", "fanout,saturate"}, check: func(t *testing.T, c Config) {
			if c.Scenarios[0].SlowClients != 0 || c.Scenarios[1].SlowClients != 5 {
				t.Fatalf("slow clients = %d, %d", c.Scenarios[0].SlowClients, c.Scenarios[1].SlowClients)
			}
		}},
		{name: "slow clients flag", args: []string{"--targets", "x:1", "--slow-clients", "7"}, check: func(t *testing.T, c Config) {
			if c.Scenarios[0].SlowClients != 7 {
				t.Fatalf("slow clients = %d", c.Scenarios[0].SlowClients)
			}
		}},
		{name: "slow clients scale down with clients", args: []string{"--targets", "x:1", "--scenario", "saturate", "--clients", "12"}, check: func(t *testing.T, c Config) {
			if s := c.Scenarios[0]; s.SlowClients != 2 {
				t.Fatalf("slow clients = %d (clients %d publishers %d)", s.SlowClients, s.Clients, s.Publishers)
			}
		}},
		{name: "slow clients among publishers", args: []string{"--targets", "x:1", "--clients", "12", "--publishers", "10", "--slow-clients", "3"}, wantErr: ErrUsage},
		{name: "no targets", args: nil, wantErr: ErrNoTargets},
		{name: "unknown scenario", args: []string{"--targets", "x:1", "--scenario", "nope"}, wantErr: ErrUnknownScenario},
		{name: "spawn and compare", args: []string{"--spawn", "mesh", "--compare", "mesh,redis"}, wantErr: ErrUsage},
		{name: "targets and spawn", args: []string{"--spawn", "mesh", "--targets", "x:1"}, wantErr: ErrUsage},
		{name: "profile needs a spawned cluster", args: []string{"--targets", "x:1", "--profile", "p"}, wantErr: ErrUsage},
		{name: "bad broker", args: []string{"--spawn", "kafka"}, wantErr: ErrUsage},
		{name: "publishers above clients", args: []string{"--targets", "x:1", "--clients", "5", "--publishers", "6"}, wantErr: ErrUsage},
		{name: "rooms above clients", args: []string{"--targets", "x:1", "--clients", "5", "--rooms", "6"}, wantErr: ErrUsage},
		{name: "size too small", args: []string{"--targets", "x:1", "--size", "10"}, wantErr: ErrUsage},
		{name: "zero rate", args: []string{"--targets", "x:1", "--rate", "0"}, wantErr: ErrUsage},
		{name: "bad target", args: []string{"--targets", "ftp://x"}, wantErr: ErrUsage},
		{name: "stray argument", args: []string{"--targets", "x:1", "extra"}, wantErr: ErrUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c, err := parseArgs(tt.args, &stderr)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{fmtMicros(0), "0µs"},
		{fmtMicros(850), "850µs"},
		{fmtMicros(1234), "1.23ms"},
		{fmtMicros(12345), "12.3ms"},
		{fmtMicros(123456), "123ms"},
		{fmtMicros(2_500_000), "2.50s"},
		{fmtRate(950), "950/s"},
		{fmtRate(59_870), "59.9k/s"},
		{fmtRate(1_234_000), "1.23M/s"},
		{fmtBytes(512), "512 B"},
		{fmtBytes(3500), "3.42 KiB"},
		{fmtBytes(-2048), "-2.00 KiB"},
		{fmtBytes(5 << 20), "5.00 MiB"},
		{fmtCPU(6.5), "6.50µs"},
		{fmtCPU(42.1), "42.1µs"},
		{fmtRatio(2, 3, true, true), "1.50x"},
		{fmtRatio(1, 250, true, true), "250x"},
		{fmtRatio(0, 0, true, true), "="},
		{fmtRatio(0, 5, true, true), "∞"},
		{fmtRatio(1, 5, true, false), "-"},
		{fmtCount(12), "12"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	h := newShardedHist()
	for i := 1; i <= 1000; i++ {
		h.shard(i).record(int64(i))
	}
	p := summarize(h.merged())
	if p.Count != 1000 || p.Max != 1000 {
		t.Fatalf("count %d max %d", p.Count, p.Max)
	}
	near := func(got, want int64) bool { return got >= want-1 && got <= want+1 }
	if !near(p.P50, 500) || !near(p.P95, 950) || !near(p.P99, 990) {
		t.Fatalf("percentiles %+v", p)
	}
	if (summarize(newShardedHist().merged()) != Percentiles{}) {
		t.Fatal("empty histogram should summarise to zero")
	}
}

func TestWire(t *testing.T) {
	var f frame
	in := []byte(` { "ts" : 1, "nested":{"a":[1,{"b":"}"}]}, "type":"message", "room":"r1","id":"a\"b",
		"text":"3.17.1700000000000000000.xx","ref":"k","extra":null, "recovered":true } `)
	if err := f.parse(in); err != nil {
		t.Fatal(err)
	}
	if !isString(f.typ, "message") || !isString(f.room, "r1") || !isString(f.ref, "k") || string(f.recovered) != "true" {
		t.Fatalf("frame %+v", f)
	}
	if id, ok := strValue(f.id); !ok || string(id) != `a"b` {
		t.Fatalf("id %q", id)
	}
	text, _ := strValue(f.text)
	pub, seq, ns, ok := parseText(text)
	if !ok || pub != 3 || seq != 17 || ns != 1700000000000000000 {
		t.Fatalf("text %q -> %d %d %d %v", text, pub, seq, ns, ok)
	}
	for _, bad := range []string{``, `{`, `{"a"}`, `{"a":}`, `[1]`, `{"a":"x"`, `{"a":1,}`} {
		if err := f.parse([]byte(bad)); err == nil {
			t.Errorf("parse(%q) succeeded", bad)
		}
	}

	b := appendText(nil, 12, 345, 1_700_000_000_123_456_789, 100, "xyz")
	if len(b) != 100 {
		t.Fatalf("len %d", len(b))
	}
	if p, s, n, ok := parseText(b); !ok || p != 12 || s != 345 || n != 1_700_000_000_123_456_789 {
		t.Fatalf("round trip %d %d %d %v", p, s, n, ok)
	}
	for _, bad := range []string{"hello", "1.2", "1..3.", "a.1.2.", "1.2.99999999999999999999."} {
		if _, _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("parseText(%q) ok", bad)
		}
	}

	it := arrIter{b: []byte(`[ {"id":"1"}, {"id":"2"} ,{"id":"3"}]`)}
	n := 0
	for {
		el, ok := it.next()
		if !ok {
			break
		}
		if f.parse(el) != nil || !isString(f.id, fmt.Sprint(n+1)) {
			t.Fatalf("element %d: %s", n, el)
		}
		n++
	}
	if it.err != nil || n != 3 {
		t.Fatalf("array: %d elements, err %v", n, it.err)
	}
	if a := testing.AllocsPerRun(100, func() { _ = f.parse(in) }); a != 0 {
		t.Errorf("frame.parse allocates %v times", a)
	}
}

func FuzzFrameParse(f *testing.F) {
	f.Add([]byte(`{"type":"joined","room":"r","history":[{"id":"1","text":"0.0.0."}],"recovered":false}`))
	f.Add([]byte(`{"type":"message","text":"1.2.3.x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr frame
		if fr.parse(b) == nil {
			it := arrIter{b: fr.history}
			for range 1000 {
				if _, ok := it.next(); !ok {
					break
				}
			}
			if t, ok := strValue(fr.text); ok {
				parseText(t)
			}
		}
	})
}

func TestProcParse(t *testing.T) {
	stat := []byte("1234 (mesh chat) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 200 18446744073709551615")
	us, err := parseStatCPU(stat)
	if err != nil || us != (250+75)*10_000 {
		t.Fatalf("cpu = %d, %v", us, err)
	}
	rss, err := parseStatusRSS([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\nThreads: 3\n"))
	if err != nil || rss != 12345 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("garbage stat parsed")
	}
	if runtime.GOOS == "linux" {
		p := readProc("self", os.Getpid())
		if p.Err != nil || p.RSSKiB <= 0 {
			t.Fatalf("own /proc: %+v", p)
		}
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	if b.set(5) || !b.set(5) || b.set(700) {
		t.Fatal("set")
	}
	want := bitset{}
	for _, i := range []int64{1, 5, 64, 700, 701} {
		want.set(i)
	}
	if got := missing(want, b); got != 3 {
		t.Fatalf("missing = %d", got)
	}
	if bitsCount(want) != 5 {
		t.Fatal("count")
	}
	// want \ b is {1, 64, 701}.
	for _, tt := range []struct {
		limit, n int64
	}{{0, 0}, {1, 0}, {2, 1}, {64, 1}, {65, 2}, {701, 2}, {702, 3}, {1 << 20, 3}} {
		if got := missingBelow(want, b, tt.limit); got != tt.n {
			t.Errorf("missingBelow(%d) = %d, want %d", tt.limit, got, tt.n)
		}
	}
}

// startFake serves a fake contract server on loopback.
func startFake(t *testing.T, opts fakeOpts) string {
	t.Helper()
	fs := newFakeServer(opts)
	srv := httptest.NewServer(fs.handler())
	t.Cleanup(func() {
		fs.closeAll()
		srv.Close()
	})
	return srv.URL
}

// runFake runs Main against the fake and returns the JSON report.
func runFake(t *testing.T, url string, extra ...string) (Report, string, error) {
	t.Helper()
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	args := append([]string{"--targets", url + "," + url, "--clients", "24", "--rooms", "3", "--publishers", "6",
		"--rate", "40", "--size", "64", "--duration", "800ms", "--warmup", "200ms", "--drain", "3s",
		"--json", jsonPath}, extra...)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Main(ctx, args, &stdout, &stderr)
	var rep Report
	if b, rerr := os.ReadFile(jsonPath); rerr == nil {
		if jerr := json.Unmarshal(b, &rep); jerr != nil {
			t.Fatalf("bad JSON: %v\n%s", jerr, b)
		}
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	return rep, stdout.String(), err
}

func TestRunAgainstFake(t *testing.T) {
	url := startFake(t, fakeOpts{})
	rep, out, err := runFake(t, url)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Version != 1 || len(rep.Runs) != 1 {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Runs[0]
	if r.Scenario != "fanout" || r.Broker != "mesh" || r.Nodes != 1 || r.Params.Clients != 24 || r.Params.Rooms != 3 {
		t.Fatalf("run header %+v", r)
	}
	if r.Sent == 0 || r.Acked != r.Sent || r.SendFailed != 0 {
		t.Fatalf("sent %d acked %d failed %d", r.Sent, r.Acked, r.SendFailed)
	}
	// 24 clients in 3 rooms: 8 members each, so every message reaches 8.
	if r.Expected != r.Acked*8 || r.Deliveries != r.Expected {
		t.Fatalf("expected %d deliveries %d acked %d", r.Expected, r.Deliveries, r.Acked)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Disconnects != 0 {
		t.Fatalf("lost %d dup %d disconnects %d", r.Lost, r.Duplicated, r.Disconnects)
	}
	if r.Latency.Count == 0 || r.Latency.Count != r.WindowDeliveries || r.DeliveriesPerSec <= 0 || r.Latency.P50 <= 0 {
		t.Fatalf("latency %+v window %d rate %v", r.Latency, r.WindowDeliveries, r.DeliveriesPerSec)
	}
	if r.Connect.Count != 24 {
		t.Fatalf("connect count %d", r.Connect.Count)
	}
	if r.Server != nil {
		t.Fatal("server stats without a spawned cluster")
	}
	for _, want := range []string{"deliveries/s", "latency p99", "lost", "connect p50"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	// JSON shape: field names other tools read.
	b, _ := json.Marshal(r)
	for _, key := range []string{`"deliveries_per_sec"`, `"latency_us":{"count"`, `"p99"`, `"lost"`, `"duplicated"`, `"connect_us"`, `"bench":{"cpu_us"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestDetectsLossAndDuplicates(t *testing.T) {
	url := startFake(t, fakeOpts{dropEvery: 7, dupEvery: 11})
	rep, _, err := runFake(t, url, "--strict")
	if !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("err = %v, want ErrCheckFailed", err)
	}
	r := rep.Runs[0]
	if r.Lost == 0 || r.Duplicated == 0 {
		t.Fatalf("lost %d dup %d: detectors did not fire", r.Lost, r.Duplicated)
	}
	// Every 7th delivery is dropped unless it is the sender's own copy:
	// roughly 1/7 of the non-sender deliveries.
	if r.Lost > r.Expected/7+r.Expected/50+8 {
		t.Fatalf("lost %d of %d is more than dropped", r.Lost, r.Expected)
	}
	if r.Deliveries+r.Lost != r.Expected {
		t.Fatalf("deliveries %d + lost %d != expected %d", r.Deliveries, r.Lost, r.Expected)
	}
}

func TestSlowConsumerReconnectResumes(t *testing.T) {
	url := startFake(t, fakeOpts{kickAfter: 15})
	rep, _, err := runFake(t, url, "--strict")
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	if r.Disconnects == 0 || r.Reconnects == 0 || r.CloseCodes["4008"] == 0 {
		t.Fatalf("disconnects %d reconnects %d codes %v", r.Disconnects, r.Reconnects, r.CloseCodes)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Unrecovered != 0 {
		t.Fatalf("lost %d dup %d unrecovered %d", r.Lost, r.Duplicated, r.Unrecovered)
	}
}

// TestSlowClientsShedAndAccount runs slow clients against a fake whose
// queues are short and whose rooms retain little history: the slow
// clients are disconnected (4008), resume unrecovered, and what fell in
// the gap is counted as unrecovered, not lost.
//
// On a loaded machine an ordinary client can fall 32 frames behind too and
// be shed the same way; that is the server doing its job, so the test
// asserts that the slow ones were shed and that every disconnect is
// accounted, not that nobody else ever was.
func TestSlowClientsShedAndAccount(t *testing.T) {
	url := startFake(t, fakeOpts{queueFrames: 32, history: 50})
	rep, _, err := runFake(t, url, "--strict", "--clients", "10", "--rooms", "1", "--publishers", "4",
		"--rate", "250", "--slow-clients", "2", "--duration", "2500ms", "--warmup", "500ms")
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	if r.Params.SlowClients != 2 {
		t.Fatalf("params %+v", r.Params)
	}
	if r.SlowDisconnects == 0 || r.SlowDisconnects > r.Disconnects || r.CloseCodes["4008"] != r.Disconnects {
		t.Fatalf("disconnects %d (slow %d) codes %v: want the slow clients shed, every disconnect a 4008", r.Disconnects, r.SlowDisconnects, r.CloseCodes)
	}
	if r.Unrecovered == 0 || r.UnrecoveredMessages == 0 {
		t.Fatalf("unrecovered resumes %d messages %d", r.Unrecovered, r.UnrecoveredMessages)
	}
	if r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("lost %d dup %d", r.Lost, r.Duplicated)
	}
	// Every acked message reached every member or fell in the gap of an
	// unrecovered resume. A publisher shed in turn may have had a message
	// delivered whose ack it never read: such deliveries come on top of
	// Expected, which counts acked messages only.
	if got := r.Deliveries + r.UnrecoveredMessages; got < r.Expected || (r.Acked == r.Sent && got != r.Expected) {
		t.Fatalf("deliveries %d + unrecovered %d vs expected %d (sent %d, acked %d)", r.Deliveries, r.UnrecoveredMessages, r.Expected, r.Sent, r.Acked)
	}
}

func TestIdleAgainstFake(t *testing.T) {
	url := startFake(t, fakeOpts{})
	var stdout, stderr bytes.Buffer
	err := Main(context.Background(), []string{"--targets", url, "--scenario", "idle", "--clients", "30", "--warmup", "0s"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "connect p99") || strings.Contains(stdout.String(), "latency p50") {
		t.Fatalf("idle table:\n%s", stdout.String())
	}
}

// TestSpawn runs --spawn with the test binary standing in for meshchat
// (see TestMain), so process start, readiness, /proc sampling and stop
// are exercised; with redis it also starts a real redis-server.
func TestSpawn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("spawn samples /proc: linux only")
	}
	brokers := []string{"mesh"}
	if _, err := exec.LookPath("redis-server"); err == nil {
		brokers = append(brokers, "redis")
	} else if os.Getenv("CI") == "true" {
		t.Fatal("redis-server not found: apt-get install redis-server")
	} else {
		t.Log("redis-server not found (apt-get install redis-server): testing mesh only")
	}
	t.Setenv(fakeNodeEnv, "1")
	dir := t.TempDir()
	args := []string{"--compare", strings.Join(brokers, ","), "--nodes", "1", "--binary", os.Args[0],
		"--clients", "12", "--rooms", "2", "--publishers", "2", "--rate", "50", "--duration", "500ms", "--warmup", "0s",
		"--json", filepath.Join(dir, "r.json"), "--html", filepath.Join(dir, "r.html"), "--svg", filepath.Join(dir, "r.svg"),
		"--profile", filepath.Join(dir, "profiles")}
	if len(brokers) == 1 {
		args[0], args[1] = "--spawn", "mesh"
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := Main(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	t.Logf("\n%s", stdout.String())
	var rep Report
	b, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != len(brokers) {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	for i, r := range rep.Runs {
		if r.Broker != brokers[i] || r.Server == nil || r.Lost != 0 || r.Deliveries == 0 {
			t.Fatalf("run %d: %+v", i, r)
		}
		wantProcs := 1
		if r.Broker == "redis" {
			wantProcs = 2
		}
		if len(r.Server.Processes) != wantProcs || r.Server.RSSBaselineKiB <= 0 || r.Server.RSSLoadKiB <= 0 {
			t.Fatalf("server stats %+v", r.Server)
		}
		// --profile: one CPU profile per node (not redis-server), a
		// gzipped pprof file, named after scenario, broker and node.
		want := filepath.Join(dir, "profiles", "fanout-"+r.Broker+"-bench1.cpu.pprof")
		if !slices.Equal(r.Profiles, []string{want}) {
			t.Fatalf("profiles %q, want %q", r.Profiles, want)
		}
		if b, err := os.ReadFile(want); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("profile %s: %v (%d bytes)", want, err, len(b))
		}
	}
	if len(brokers) == 2 && !strings.Contains(stdout.String(), "redis/mesh") {
		t.Fatalf("no ratio column:\n%s", stdout.String())
	}
	for _, name := range []string{"r.html", "r.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Contains(b, []byte("<svg")) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestSpawnFailureNamesTheProcess checks that a node that exits at once
// fails fast with its log, rather than waiting for the ready timeout.
func TestSpawnFailureNamesTheProcess(t *testing.T) {
	// The ready timeout is far above the bound checked below, so that a
	// loaded machine cannot blur "failed fast" and "timed out".
	cfg := Config{Nodes: 1, Binary: "/bin/false", ReadyTimeout: 2 * time.Minute}
	start := time.Now()
	_, err := startCluster(context.Background(), cfg, "mesh", discardLogger())
	if err == nil || !strings.Contains(err.Error(), "bench1 exited early") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > time.Minute {
		t.Fatalf("failed after %v: waited for the ready timeout instead of noticing the exit", took)
	}
	if i := strings.Index(err.Error(), "(logs in "); i >= 0 {
		os.RemoveAll(strings.TrimSuffix(err.Error()[i+len("(logs in "):], ")"))
	}
}

func TestCompareTable(t *testing.T) {
	mk := func(broker string, p99 int64, rate float64, cpu float64) Result {
		return Result{Scenario: "fanout", Broker: broker, Nodes: 3,
			Params:           Params{Clients: 300, Rooms: 1, Publishers: 10, Rate: 20},
			Latency:          Percentiles{Count: 10, P50: p99 / 2, P95: p99, P99: p99, Max: 2 * p99},
			Connect:          Percentiles{Count: 300, P50: 800, P99: 3000},
			DeliveriesPerSec: rate,
			Server:           &ServerStats{CPUPerDelivery: cpu, IdleBytesPerConn: 3000, LoadBytesPerConn: 5000},
		}
	}
	runs := []Result{mk("mesh", 2000, 60000, 5), mk("redis", 4000, 60000, 10),
		{Scenario: "idle", Broker: "mesh", Params: Params{Clients: 1000}, Connect: Percentiles{Count: 1000, P50: 500, P99: 900}, Server: &ServerStats{IdleBytesPerConn: 3500}},
		{Scenario: "idle", Broker: "redis", Params: Params{Clients: 1000}, Connect: Percentiles{Count: 1000, P50: 500, P99: 900}, Server: &ServerStats{IdleBytesPerConn: 7000}}}
	header, rows := table(runs, []string{"mesh", "redis"})
	if strings.Join(header, "|") != "scenario|metric|mesh|redis|redis/mesh" {
		t.Fatalf("header %v", header)
	}
	find := func(sc, metric string) []string {
		cur := ""
		for _, r := range rows {
			if r[0] != "" {
				cur = r[0]
			}
			if cur == sc && r[1] == metric {
				return r
			}
		}
		t.Fatalf("no row %s/%s in %v", sc, metric, rows)
		return nil
	}
	if r := find("fanout", "latency p99"); r[2] != "2.00ms" || r[3] != "4.00ms" || r[4] != "2.00x" {
		t.Fatalf("p99 row %v", r)
	}
	if r := find("fanout", "server CPU/delivery"); r[4] != "2.00x" {
		t.Fatalf("cpu row %v", r)
	}
	if r := find("idle", "RSS/conn idle"); r[2] != "3.42 KiB" || r[4] != "2.00x" {
		t.Fatalf("idle row %v", r)
	}
	for _, r := range rows {
		if r[1] == "latency p50" && r[2] == "-" && r[3] == "-" {
			t.Fatalf("blank row kept: %v", r)
		}
	}
	var buf bytes.Buffer
	if err := writeText(&buf, runs, []string{"mesh", "redis"}); err != nil {
		t.Fatal(err)
	}
	svg := svgChart(runs)
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<rect") < 10 {
		t.Fatalf("svg:\n%s", svg)
	}
}

func TestProgressBar(t *testing.T) {
	var buf clustertest.Buffer
	p := newProgress(&buf)
	p.setPrefix("fanout/mesh")
	p.phase("measure", time.Second, func() int64 { return 42 })
	clustertest.WaitFor(t, 5*time.Second, "the measure phase shown", func() bool { return strings.Contains(buf.String(), "measure") })
	p.stop()
	p.stop() // safe twice
	if s := buf.String(); !strings.Contains(s, "fanout/mesh measure") || !strings.Contains(s, "[") {
		t.Fatalf("progress output %q", s)
	}
	var nilp *progress
	nilp.phase("x", 0, nil)
	nilp.stop()
}
