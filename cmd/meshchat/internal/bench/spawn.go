package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/freeport"
)

// cluster is a throwaway meshchat cluster of real processes started by
// the bench: Nodes copies of the binary and, for redis, a redis-server.
type cluster struct {
	broker string
	nodes  []*proc
	redis  *proc
	urls   []string
	dir    string
	keep   bool
	log    *slog.Logger
	httpc  *http.Client
}

// proc is one child process and its log file.
type proc struct {
	name      string
	debugAddr string // the node's --debug-addr, with --profile
	cmd       *exec.Cmd
	logPath   string
	logFile   *os.File
	done      chan struct{}
	waitErr   error // set before done closes
}

// childEnv is the bench's environment without MESHCHAT_ variables, which
// would silently override the flags the bench passes.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHCHAT_") {
			env = append(env, kv)
		}
	}
	return env
}

// startCluster starts the processes and waits until every node is ready
// and sees all nodes alive.
func startCluster(ctx context.Context, cfg Config, broker string, log *slog.Logger) (_ *cluster, err error) {
	dir, err := os.MkdirTemp("", "meshchat-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{broker: broker, dir: dir, keep: cfg.KeepLogs, log: log,
		httpc: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	defer func() {
		if err != nil {
			c.keep = true // the logs explain the failure
			c.stop()
			err = fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}()
	// Ports come from below the ephemeral range, so that no outgoing
	// connection takes one between the check and the child's bind.
	var ports freeport.Set
	take := func(udp bool) (int, error) { return ports.Next("127.0.0.1", 20000+mrand.IntN(10000), udp) }
	var secret [24]byte
	_, _ = rand.Read(secret[:])

	var redisURL string
	if broker == "redis" {
		port, err := take(false)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c.redis, err = c.start("redis", cfg.RedisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir)
		if err != nil {
			return nil, err
		}
		if err := c.waitRedis(ctx, addr, cfg.ReadyTimeout); err != nil {
			return nil, err
		}
		redisURL = "redis://" + addr + "/0"
	}

	var seed string
	for i := 1; i <= cfg.Nodes; i++ {
		hp, err := take(false)
		if err != nil {
			return nil, err
		}
		gp, err := take(true)
		if err != nil {
			return nil, err
		}
		gossip := "127.0.0.1:" + strconv.Itoa(gp)
		args := []string{"serve",
			"--http", "127.0.0.1:" + strconv.Itoa(hp),
			"--gossip", gossip,
			"--broker", broker,
			"--rate-limit", "0",
			"--auth", "open", // the bench logs its users in by name,
			"--login-limit", "1000000", // all of them from this one address
			"--max-conns-per-ip", "0", // and so are their connections
			"--name", "bench" + strconv.Itoa(i),
			"--secret", hex.EncodeToString(secret[:]),
		}
		if seed != "" {
			args = append(args, "--join", seed)
		} else {
			seed = gossip
		}
		if redisURL != "" {
			args = append(args, "--redis", redisURL)
		}
		var debugAddr string
		if cfg.ProfileDir != "" {
			dp, err := take(false)
			if err != nil {
				return nil, err
			}
			debugAddr = "127.0.0.1:" + strconv.Itoa(dp)
			args = append(args, "--debug-addr", debugAddr)
		}
		p, err := c.start("bench"+strconv.Itoa(i), cfg.Binary, args...)
		if err != nil {
			return nil, err
		}
		p.debugAddr = debugAddr
		c.nodes = append(c.nodes, p)
		c.urls = append(c.urls, "http://127.0.0.1:"+strconv.Itoa(hp))
	}
	if err := c.waitReady(ctx, cfg.ReadyTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// start runs one child with its output in a log file.
func (c *cluster) start(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: starting %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.log.Debug("bench: started", "name", name, "pid", cmd.Process.Pid, "args", strings.Join(args, " "))
	return p, nil
}

// exited returns an error naming the first child that has already exited.
func (c *cluster) exited() error {
	for _, p := range c.all() {
		select {
		case <-p.done:
			return fmt.Errorf("bench: %s exited early (%v): %s", p.name, p.waitErr, tail(p.logPath, 1500))
		default:
		}
	}
	return nil
}

func (c *cluster) all() []*proc {
	ps := append([]*proc(nil), c.nodes...)
	if c.redis != nil {
		ps = append(ps, c.redis)
	}
	return ps
}

// waitRedis waits until redis-server answers PING.
func (c *cluster) waitRedis(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := c.exited(); err != nil {
			return err
		}
		if pingRedis(addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: redis-server at %s did not answer PING within %v", ErrNotReady, addr, timeout)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func pingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
	}
	return nil
}

// waitReady waits for /readyz 200 on every node and for every node's
// /api/cluster to list all nodes alive.
func (c *cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := len(c.nodes)
	var why string
	for {
		if err := c.exited(); err != nil {
			return err
		}
		why = ""
		for _, u := range c.urls {
			if err := c.ready(ctx, u); err != nil {
				why = err.Error()
				break
			}
			ci, err := fetchCluster(ctx, c.httpc, u)
			if err != nil {
				why = err.Error()
				break
			}
			if n := ci.alive(); n != want {
				why = fmt.Sprintf("%s sees %d of %d nodes alive", u, n, want)
				break
			}
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %v: %s", ErrNotReady, timeout, why)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func (c *cluster) ready(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.httpc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/readyz: %s", u, resp.Status)
	}
	return nil
}

// sample reads CPU and RSS of every process: nodes first, then redis.
func (c *cluster) sample() procSample {
	var s procSample
	for _, p := range c.all() {
		s = append(s, readProc(p.name, p.cmd.Process.Pid))
	}
	return s
}

// stop terminates the nodes (SIGTERM, SIGKILL after 10 s), then redis, and
// removes the log directory unless it is kept.
func (c *cluster) stop() {
	stopProcs(c.nodes)
	if c.redis != nil {
		stopProcs([]*proc{c.redis})
	}
	c.httpc.CloseIdleConnections()
	if !c.keep {
		os.RemoveAll(c.dir)
	}
}

func stopProcs(ps []*proc) {
	for _, p := range ps {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range ps {
		t := time.NewTimer(10 * time.Second)
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Stop()
	}
}

// tail returns the end of a log file for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-n)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return strings.TrimSpace(string(b))
}
