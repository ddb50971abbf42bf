// Package redistest starts throwaway redis-server processes for tests.
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
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the message used when redis-server cannot be found.
const InstallHint = "redis-server not found in PATH or /usr/bin: apt-get install redis-server"

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
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when cmd has exited
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
	bin, err := findBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal(InstallHint)
		}
		tb.Skip(InstallHint)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), opts: opts}
	// A port found free can be taken before redis-server binds it; try a
	// few ports before giving up.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		if lastErr = s.start(port); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatalf("redistest: %v", lastErr)
	}
	tb.Cleanup(s.Stop)
	return s
}

func findBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	const fallback = "/usr/bin/redis-server"
	if _, err := os.Stat(fallback); err == nil {
		return fallback, nil
	}
	return "", errors.New(InstallHint)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

	out := &lockedBuffer{}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	// Own process group: a ^C to the test binary must not race our Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	for {
		if ping(addr) == nil {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited during start:\n%s", port, out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d did not answer PING within %v:\n%s", port, startTimeout, out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
	}

	s.mu.Lock()
	s.port, s.cmd, s.out, s.done = port, cmd, out, done
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
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 10s) and waits
// for it to exit. Safe to call when already stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Kill stops the server with SIGKILL, like a crash. With Persist, writes
// acknowledged before the kill survive (fsync on every write).
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
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
	out := s.out
	s.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// DataDir is the server's working directory (AOF/RDB files live here).
func (s *Server) DataDir() string { return filepath.Clean(s.dir) }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
