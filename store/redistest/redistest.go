// Package redistest starts throwaway redis-server processes for tests; it
// is the test kit's Redis, built on cluster/clustertest.
//
// Each Server is a real redis-server bound to 127.0.0.1 on a free port with
// its own temporary directory, so tests in one process (and parallel test
// binaries) never share state. The server is stopped when the test ends.
//
// Concurrency: a Server's methods are safe for concurrent use, but Stop and
// Restart are meant to be called from the test goroutine.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Options configure a Server.
type Options struct {
	// Persist keeps the data set across Stop and Restart (append-only file,
	// fsync on every write). Default false: nothing is written to disk and
	// a restarted server comes back empty, like a Redis that lost its data.
	Persist bool
	// Args are extra redis-server arguments, e.g. "--maxmemory", "10mb".
	Args []string
}

// Server is one running (or stopped) redis-server.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	opts Options

	mu   sync.Mutex
	port int
	proc *clustertest.Process // nil while stopped
}

// Start starts a redis-server without persistence and stops it when the
// test ends. It skips the test when redis-server is not installed, or
// fails it when CI=true.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin := clustertest.RequireBinary(tb, "redis-server", "redis-server", "/usr/bin/redis-server")
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), opts: opts}
	// A port found free can be taken before redis-server binds it; try a
	// few ports before giving up.
	var lastErr error
	for range 5 {
		if lastErr = s.start(clustertest.FreePort(tb, false)); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatalf("redistest: %v", lastErr)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Reserve returns a Server that is not running yet, on a port found
// free: Addr and URL already name it, and Restart starts it there. It is
// for tests of clients that start before their Redis does. Like Start,
// it skips the test when redis-server is not installed (fails under
// CI=true).
func Reserve(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin := clustertest.RequireBinary(tb, "redis-server", "redis-server", "/usr/bin/redis-server")
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), opts: opts, port: clustertest.FreePort(tb, false)}
	tb.Cleanup(s.Stop)
	return s
}

// start runs redis-server on port and waits until it answers PING.
func (s *Server) start(port int) error {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", "",
		"--save", "",
		"--databases", "16",
	}
	if s.opts.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.opts.Args...)

	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	p, err := clustertest.StartProcess(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	for {
		if ping(addr) == nil {
			break
		}
		if !p.Running() {
			return fmt.Errorf("redis-server on port %d exited during start:\n%s", port, p.Out.String())
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v:\n%s", port, startTimeout, p.Out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
	}

	s.mu.Lock()
	s.port, s.proc = port, p
	s.mu.Unlock()
	return nil
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL is the server's URL for database 0, e.g. redis://127.0.0.1:6380/0.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// DBURL is the server's URL for database db (0-15): tests that share one
// server can keep their data apart.
func (s *Server) DBURL(db int) string {
	return "redis://" + s.Addr() + "/" + strconv.Itoa(db)
}

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.Running()
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 10s) and waits
// for it to exit. Safe to call when already stopped.
func (s *Server) Stop() {
	if p := s.take(); p != nil {
		p.Stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Kill stops the server with SIGKILL, like a crash. With Persist, writes
// acknowledged before the kill survive (fsync on every write).
func (s *Server) Kill() {
	if p := s.take(); p != nil {
		p.Kill()
	}
}

// take returns the running process, if any, and forgets it.
func (s *Server) take() *clustertest.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	return p
}

// Restart stops the server if it runs and starts it again on the same
// port. Without Options.Persist the restarted server is empty. Clients
// see an outage between the two.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	// The old process has exited, but the kernel may briefly refuse the
	// port; retry within the start timeout.
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.start(port)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

// Log returns what the current server process has written so far.
func (s *Server) Log() string {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.Out.String()
}

// DataDir is the server's working directory (AOF/RDB files live here).
func (s *Server) DataDir() string { return filepath.Clean(s.dir) }
