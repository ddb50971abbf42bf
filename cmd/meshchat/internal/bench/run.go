package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// runner is one measured run of one scenario against one cluster.
type runner struct {
	sc      Scenario
	cfg     Config
	targets []string
	wsURLs  []string
	cl      *cluster // nil when loading --targets
	log     *slog.Logger
	prog    *progress

	runID      string
	pad        string
	httpc      *http.Client
	dialer     *websocket.Dialer
	slowDialer *websocket.Dialer // small socket receive buffer

	phase       atomic.Int32
	latency     *shardedHist
	connectHist *lockedHist

	clients    []*client
	publishers []*publisher
	members    []int // room -> member count
	readers    sync.WaitGroup
	pubs       sync.WaitGroup
}

// newRunID returns a short random id that makes user and room names
// unique per run, so runs against a long-lived cluster never collide.
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [6]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func newRunner(sc Scenario, cfg Config, targets []string, cl *cluster, log *slog.Logger, prog *progress) *runner {
	r := &runner{
		sc: sc, cfg: cfg, targets: targets, cl: cl, log: log, prog: prog,
		runID:       newRunID(),
		pad:         strings.Repeat("x", 256),
		latency:     newShardedHist(),
		connectHist: newLockedHist(),
	}
	for _, t := range targets {
		r.wsURLs = append(r.wsURLs, "ws"+strings.TrimPrefix(t, "http")+"/ws")
	}
	tr := &http.Transport{
		Proxy:               nil, // loopback and cluster-internal targets: never via a proxy
		DialContext:         (&net.Dialer{Timeout: handshakeTimeout}).DialContext,
		MaxIdleConnsPerHost: cfg.ConnectConcurrency,
		IdleConnTimeout:     30 * time.Second,
	}
	r.httpc = &http.Client{Transport: tr, Timeout: handshakeTimeout}
	r.dialer = &websocket.Dialer{
		HandshakeTimeout: handshakeTimeout,
		// Small buffers: 3000 connections share the box with the server.
		ReadBufferSize:  4096,
		WriteBufferSize: 1024,
	}
	slow := *r.dialer
	nd := &net.Dialer{Timeout: handshakeTimeout, Control: slowSockControl}
	slow.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			if err := tc.SetReadBuffer(slowReadBuffer); err != nil {
				conn.Close()
				return nil, fmt.Errorf("bench: slow client receive buffer: %w", err)
			}
		}
		return conn, nil
	}
	r.slowDialer = &slow
	return r
}

// slowNow reports whether slow clients read slowly: during the load
// only, so that they catch up in the drain and loss is judged fairly.
func (r *runner) slowNow() bool {
	ph := r.phase.Load()
	return ph == phaseWarmup || ph == phaseMeasure
}

// build creates the clients and publishers and sizes their bookkeeping.
func (r *runner) build() {
	sc := r.sc
	r.members = make([]int, sc.Rooms)
	pubsIn := make([]int, sc.Rooms)
	for p := range sc.Publishers {
		pubsIn[p%sc.Rooms]++
	}
	// Bits per publisher expected over the run, with slack; bitsets grow
	// if a run goes longer.
	expect := int64(sc.Rate*(sc.Warmup+sc.Duration).Seconds()*1.2) + 64
	for i := range sc.Clients {
		room := i % sc.Rooms
		r.members[room]++
		c := &client{
			r:        r,
			idx:      i,
			name:     "b" + r.runID + "-" + strconv.Itoa(i),
			room:     room,
			roomName: "b" + r.runID + "-r" + strconv.Itoa(room),
			target:   i % len(r.targets),
			hist:     r.latency.shard(i),
			slow:     i >= sc.Clients-sc.SlowClients,
			buf:      make([]byte, 4096),
			joined:   make(chan struct{}),
		}
		c.seen = make([]bitset, pubsIn[room])
		c.floor = make([]int64, pubsIn[room])
		for k := range c.seen {
			c.seen[k] = make(bitset, expect/64+1)
		}
		if i < sc.Publishers {
			c.pub = newPublisher(c)
			c.acked = make(bitset, expect/64+1)
			r.publishers = append(r.publishers, c.pub)
		}
		r.clients = append(r.clients, c)
	}
}

// run executes the scenario and returns its result.
func (r *runner) run(ctx context.Context) (res Result, err error) {
	sc := r.sc
	res = Result{
		Scenario: sc.Name, Targets: r.targets, Started: time.Now().UTC(), RunID: r.runID,
		Params: Params{Clients: sc.Clients, Rooms: sc.Rooms, Publishers: sc.Publishers, Rate: sc.Rate,
			Size: sc.Size, DurationS: sc.Duration.Seconds(), WarmupS: sc.Warmup.Seconds(), SlowClients: sc.SlowClients},
	}
	if info, err := fetchCluster(ctx, r.httpc, r.targets[0]); err == nil {
		res.Broker = info.Broker
		res.Nodes = info.alive()
	} else {
		r.log.Warn("bench: reading /api/cluster", "target", r.targets[0], "err", err)
	}
	r.build()

	clientCtx, stopClients := context.WithCancel(ctx)
	defer func() {
		stopClients()
		r.stopAll()
		r.httpc.CloseIdleConnections()
	}()

	var baseline procSample
	if r.cl != nil {
		baseline = r.cl.sample()
	}

	// Setup: connect everyone with bounded concurrency, then wait until
	// every client has its joined frame.
	r.prog.phase("connect", 0, r.joinedCount)
	if err := r.connectAll(clientCtx); err != nil {
		return res, err
	}
	if err := r.waitJoined(ctx); err != nil {
		return res, err
	}
	res.Connect = summarize(r.connectHist.h)
	r.waitQuiet(ctx)

	var idle procSample
	if sc.Idle {
		r.prog.phase("idle", sc.Warmup, nil)
		if err := sleepCtx(ctx, sc.Warmup); err != nil {
			return res, err
		}
	}
	if r.cl != nil {
		idle = r.cl.sample()
	}
	if sc.Idle {
		if r.profiling() {
			r.saveProfiles(&res, r.cl.heapProfiles(ctx, r.cfg.ProfileDir, r.profilePrefix()))
		}
		stopClients()
		r.finish(&res, baseline, idle, procSample{}, procSample{}, 0, cpuSelf(), cpuSelf())
		return res, nil
	}

	// Load: one ticker drives every publisher.
	pubCtx, stopPubs := context.WithCancel(clientCtx)
	defer stopPubs()
	for _, p := range r.publishers {
		r.pubs.Add(1)
		go p.run(pubCtx)
	}
	tickerDone := make(chan struct{})
	go func() {
		defer close(tickerDone)
		r.tick(pubCtx)
	}()
	r.phase.Store(phaseWarmup)
	r.prog.phase("warm-up", sc.Warmup, r.windowCount)
	if err := sleepCtx(ctx, sc.Warmup); err != nil {
		return res, err
	}

	var start, end procSample
	var profs *profileSet
	if r.cl != nil {
		start = r.cl.sample()
		if r.profiling() {
			profs = r.cl.cpuProfiles(ctx, r.cfg.ProfileDir, r.profilePrefix(), sc.Duration)
		}
	}
	benchStart := cpuSelf()
	t0 := time.Now()
	r.phase.Store(phaseMeasure)
	r.prog.phase("measure", sc.Duration, r.windowCount)
	if err := sleepCtx(ctx, sc.Duration); err != nil {
		return res, err
	}
	r.phase.Store(phaseDrain)
	elapsed := time.Since(t0)
	benchEnd := cpuSelf()
	if r.cl != nil {
		end = r.cl.sample()
	}
	stopPubs()
	<-tickerDone
	r.pubs.Wait()

	r.prog.phase("drain", r.cfg.Drain, nil)
	r.drain(ctx)
	r.prog.phase("", 0, nil)
	if profs != nil {
		r.saveProfiles(&res, profs)
	}

	stopClients()
	r.finish(&res, baseline, idle, start, end, elapsed, benchStart, benchEnd)
	return res, nil
}

// profiling tells whether node profiles are wanted and can be taken.
func (r *runner) profiling() bool { return r.cl != nil && r.cfg.ProfileDir != "" }

// profilePrefix names a run's profile files: scenario and broker.
func (r *runner) profilePrefix() string {
	return r.sc.Name + "-" + r.cl.broker
}

// saveProfiles waits for the nodes' profiles and lists them in res; a
// profile that failed is logged, not fatal to the run.
func (r *runner) saveProfiles(res *Result, ps *profileSet) {
	paths, err := ps.wait()
	if err != nil {
		r.log.Warn("bench: node profiles", "err", err)
	}
	if len(paths) > 0 {
		r.log.Info("bench: node profiles written", "files", paths)
	}
	res.Profiles = append(res.Profiles, paths...)
}

// connectAll logs in and upgrades every client, ConnectConcurrency at a
// time, and starts each reader as soon as its connection is up.
func (r *runner) connectAll(ctx context.Context) error {
	sem := make(chan struct{}, r.cfg.ConnectConcurrency)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   int
	)
	for _, c := range r.clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			// A few attempts: a node under a connection storm may refuse
			// some; the connect-time histogram still shows the cost.
			for attempt := range 3 {
				if attempt > 0 && sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond) != nil {
					break
				}
				if err = c.connect(ctx); err == nil {
					break
				}
			}
			if err != nil {
				mu.Lock()
				failed++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			r.readers.Add(1)
			go c.run(ctx)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("%w: %d of %d clients could not connect: %w", ErrSetup, failed, len(r.clients), firstErr)
	}
	return nil
}

// waitJoined waits for every client's joined frame.
func (r *runner) waitJoined(ctx context.Context) error {
	timeout := r.cfg.ReadyTimeout + time.Duration(len(r.clients)/1000)*10*time.Second
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, c := range r.clients {
		select {
		case <-c.joined:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%w: only %d of %d clients joined within %v", ErrSetup, r.joinedCount(), len(r.clients), timeout)
		}
	}
	return nil
}

func (r *runner) joinedCount() int64 {
	var n int64
	for _, c := range r.clients {
		select {
		case <-c.joined:
			n++
		default:
		}
	}
	return n
}

func (r *runner) windowCount() int64 {
	var n int64
	for _, c := range r.clients {
		n += c.window.Load()
	}
	return n
}

// waitQuiet waits until no client has read a frame for a few polls (the
// presence burst of joining has passed), at most 5 s, so idle memory is
// sampled at rest.
func (r *runner) waitQuiet(ctx context.Context) {
	const poll = 100 * time.Millisecond
	last, still := int64(-1), 0
	for range 50 {
		var n int64
		for _, c := range r.clients {
			n += c.frames.Load()
		}
		if n == last {
			if still++; still >= 3 {
				return
			}
		} else {
			last, still = n, 0
		}
		if sleepCtx(ctx, poll) != nil {
			return
		}
	}
}

// tick is the shared publisher clock: every tick it computes how many
// messages each publisher owes by now (offsets stagger publishers inside
// one period) and wakes those that owe more.
func (r *runner) tick(ctx context.Context) {
	n := len(r.publishers)
	if n == 0 {
		return
	}
	rate := r.sc.Rate
	interval := time.Duration(float64(time.Second) / (rate * float64(n)))
	interval = min(max(interval, time.Millisecond), 5*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			el := now.Sub(start).Seconds()
			for i, p := range r.publishers {
				due := int64(el*rate + float64(i)/float64(n))
				if due > p.target.Load() {
					p.target.Store(due)
					select {
					case p.wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}
}

// drain waits for deliveries still in flight: until every written
// message reached every member; or, while no client is between a
// disconnect and its resume, every acked one could have and nothing moved
// for 200 ms (1 s once a client was shed), or nothing moved for 2 s (the
// rest is lost); or the --drain bound. A shed client's resume brings
// what it missed, and on a loaded machine reconnecting alone can take
// longer than 2 s.
func (r *runner) drain(ctx context.Context) {
	var upper int64
	for _, p := range r.publishers {
		upper += p.ok.Load() * int64(r.members[p.c.room])
	}
	const poll = 20 * time.Millisecond
	deadline := time.Now().Add(r.cfg.Drain)
	last, still := int64(-1), 0
	for time.Now().Before(deadline) {
		var acked, got int64
		resuming, shed := false, false
		for _, p := range r.publishers {
			acked += p.c.acks.Load() * int64(r.members[p.c.room])
		}
		for _, c := range r.clients {
			got += c.deliveries.Load()
			resuming = resuming || c.disconnects.Load() > c.rejoins.Load()
			shed = shed || c.disconnects.Load() > 0
		}
		if got >= upper {
			return
		}
		if got == last {
			still++
		} else {
			still = 0
		}
		// Deliveries count messages whose ack a shed publisher never
		// read, so got can pass acked while a member still misses some;
		// and a shed client learns of it only when it reads the close,
		// which a loaded machine can delay: with shedding in the run,
		// quiet must last longer.
		quiet := 10
		if shed {
			quiet = 50
		}
		if !resuming && ((got >= acked && still >= quiet) || still >= 100) {
			return
		}
		last = got
		if sleepCtx(ctx, poll) != nil {
			return
		}
	}
}

// stopAll closes every connection and waits for the readers.
func (r *runner) stopAll() {
	for _, c := range r.clients {
		c.stop()
	}
	r.readers.Wait()
}

// finish computes the result once every reader has returned.
func (r *runner) finish(res *Result, baseline, idle, start, end procSample, elapsed time.Duration, benchStart, benchEnd int64) {
	// Readers own the bitsets: stop them before reading.
	r.stopAll()
	res.Latency = summarize(r.latency.merged())
	res.ElapsedS = elapsed.Seconds()
	for _, p := range r.publishers {
		res.Sent += p.ok.Load()
		res.SendFailed += p.failed.Load()
		res.Acked += p.c.acks.Load()
	}
	for _, c := range r.clients {
		res.Deliveries += c.deliveries.Load()
		res.WindowDeliveries += c.window.Load()
		res.Duplicated += c.dups.Load()
		res.Resumed += c.resumed.Load()
		res.Disconnects += c.disconnects.Load()
		if c.slow {
			res.SlowDisconnects += c.disconnects.Load()
		}
		res.Reconnects += c.reconnects.Load()
		res.Unrecovered += c.unrecovered.Load()
		c.emu.Lock()
		res.Errors = mergeCounts(res.Errors, c.errCodes)
		res.CloseCodes = mergeCounts(res.CloseCodes, c.closeCodes)
		c.emu.Unlock()
		// Lost: acked messages of the room's publishers this member
		// never received, except those in the gap of an unrecovered
		// resume (below the floor), counted apart.
		for k := range c.seen {
			p := r.clients[c.room+k*r.sc.Rooms].pub
			res.Expected += int64(bitsCount(p.c.acked))
			gone := missing(p.c.acked, c.seen[k])
			gap := missingBelow(p.c.acked, c.seen[k], c.floor[k])
			res.Lost += gone - gap
			res.UnrecoveredMessages += gap
		}
	}
	if elapsed > 0 {
		res.DeliveriesPerSec = float64(res.WindowDeliveries) / elapsed.Seconds()
	}
	res.Bench.CPUMicros = benchEnd - benchStart
	if res.WindowDeliveries > 0 {
		res.Bench.CPUPerDelivery = float64(res.Bench.CPUMicros) / float64(res.WindowDeliveries)
	}
	if r.cl != nil {
		res.Server = serverStats(baseline, idle, start, end, int64(len(r.clients)), res.WindowDeliveries, r.sc.Idle)
	}
}

func bitsCount(b bitset) int64 { return missing(b, nil) }

func mergeCounts(dst, src map[string]int64) map[string]int64 {
	for k, v := range src {
		if dst == nil {
			dst = map[string]int64{}
		}
		dst[k] += v
	}
	return dst
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// clusterInfo is what the bench reads of GET /api/cluster.
type clusterInfo struct {
	Broker string `json:"broker"`
	Nodes  []struct {
		State string `json:"state"`
	} `json:"nodes"`
}

func (ci clusterInfo) alive() int {
	n := 0
	for _, nd := range ci.Nodes {
		if nd.State == "alive" {
			n++
		}
	}
	return n
}

func fetchCluster(ctx context.Context, hc *http.Client, target string) (clusterInfo, error) {
	var ci clusterInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target+"/api/cluster", nil)
	if err != nil {
		return ci, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ci, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ci, fmt.Errorf("GET %s/api/cluster: %s", target, resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ci)
	return ci, err
}
