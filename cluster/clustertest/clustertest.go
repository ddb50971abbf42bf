// Package clustertest is the part of the test kit every layer's tests
// share to run pieces of a cluster on one machine: free addresses (TCP and
// UDP, never handed out twice in a process), waiting for a condition with
// a deadline, and finding the real programs the tests drive (redis-server,
// nginx, chromium), which fails instead of skipping under CI=true.
//
// It sits under cluster, the bottom of the import graph, and imports
// nothing of meshchat, so any package's tests may use it. Production code
// never does (cmd/meshchat's deps_test enforces it).
package clustertest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it holds or timeout passes, then fails the test
// with what. It returns how long it waited.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	if !Eventually(timeout, cond) {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	return time.Since(start)
}

// Eventually polls cond until it holds (true) or timeout passes (false),
// for callers that report the failure themselves. It polls every
// millisecond at first, backing off to every 20ms: a condition that holds
// at once costs no wait, one that takes a while costs little CPU.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 20*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
}

// FreeAddr returns 127.0.0.1:<port> with a port that was free for TCP (and
// UDP when udp is set) a moment ago, for a listener or process the test
// starts.
//
// The port comes from below the kernel's ephemeral range (32768 and up by
// default), not from a listener on port 0: a port from that range can be
// handed to an outgoing connection (of this test, a node or another test
// package) between the check and the bind, which then fails with "address
// already in use". No port is handed out twice in one process.
func FreeAddr(tb testing.TB, udp bool) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb, udp)))
}

// FreePort is FreeAddr's port.
func FreePort(tb testing.TB, udp bool) int {
	tb.Helper()
	used.Lock()
	defer used.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if used.m[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			pc.Close()
		}
		used.m[port] = true
		return port
	}
	tb.Fatal("no free port below the ephemeral range")
	return 0
}

// used are the ports FreePort handed out in this process.
var used = struct {
	sync.Mutex
	m map[int]bool
}{m: make(map[int]bool)}

// RequireBinary returns the path of an external program the test needs,
// looked up in PATH and then in paths. Missing, it skips the test with the
// Debian package to install, or fails it when CI=true: CI installs
// everything, and a skip there would hide a gap.
func RequireBinary(tb testing.TB, name, debPkg string, paths ...string) string {
	tb.Helper()
	if p, err := FindBinary(name, paths...); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: apt-get install %s", name, debPkg)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// FindBinary looks name up in PATH, then tries paths.
func FindBinary(name string, paths ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Buffer is a bytes.Buffer safe for concurrent writers, for the output of
// processes and loggers that outlive a test's goroutine.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CleanupTimeout bounds each stop that Cleanup runs.
const CleanupTimeout = 15 * time.Second

// Cleanup runs stop when the test ends, with a context bounded by
// CleanupTimeout, and fails the test if it returns an error: the one
// shape for "shut this part down with the test".
func Cleanup(tb testing.TB, what string, stop func(context.Context) error) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
		defer cancel()
		if err := stop(ctx); err != nil {
			tb.Errorf("%s: %v", what, err)
		}
	})
}
