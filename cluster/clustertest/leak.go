package clustertest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakTimeout is how long goroutines get to finish after the tests end.
const leakTimeout = 10 * time.Second

// leakIgnore lists stack fragments of goroutines the runtime or standard
// library start lazily and keep for the life of the process.
var leakIgnore = []string{
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"testing.(*M).",
	"testing.runTests",
	"testing.(*T).Run",
	"testing.tRunner",
}

// VerifyTestMain runs the package's tests and then fails the test binary
// when goroutines started during the run are still alive after a grace
// period. Call it from TestMain:
//
//	func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M) {
	base := goroutineIDs()
	code := m.Run()
	if code == 0 {
		if leaked := waitLeaks(base); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutine leak after tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// VerifyNoLeaks checks, when tb ends (after its other cleanups), that
// every goroutine started since this call has ended. Call it first thing
// in a test that runs alone (not t.Parallel).
func VerifyNoLeaks(tb testing.TB) {
	tb.Helper()
	base := goroutineIDs()
	tb.Cleanup(func() {
		if leaked := waitLeaks(base); leaked != "" {
			tb.Errorf("goroutine leak:\n%s", leaked)
		}
	})
}

// waitLeaks waits until no goroutine outside base is left and returns the
// stacks of those that are, or "".
func waitLeaks(base map[string]bool) string {
	deadline := time.Now().Add(leakTimeout)
	for {
		leaked := newGoroutines(base)
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by deadline
	}
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for _, g := range stacks() {
		ids[goroutineID(g)] = true
	}
	return ids
}

func newGoroutines(base map[string]bool) []string {
	self := goroutineID(stacks1())
	var out []string
	for _, g := range stacks() {
		id := goroutineID(g)
		if base[id] || id == self || ignored(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}

func ignored(stack string) bool {
	for _, s := range leakIgnore {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// stacks returns every goroutine's stack trace.
func stacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func stacks1() string {
	buf := make([]byte, 4096)
	return string(buf[:runtime.Stack(buf, false)])
}

// goroutineID extracts N from "goroutine N [state]:".
func goroutineID(stack string) string {
	stack = strings.TrimPrefix(stack, "goroutine ")
	if i := strings.IndexByte(stack, ' '); i > 0 {
		return stack[:i]
	}
	return strings.TrimSpace(stack)
}

// NetworkGoroutines are stack fragments of the goroutines meshchat's
// network dependencies start for it (gossip, Redis, WebSocket and HTTP
// connections): a whole node's tests pass them to VerifyOwnTestMain, so
// that a node that does not stop them all fails its package.
var NetworkGoroutines = []string{
	"github.com/hashicorp/memberlist", "github.com/redis/go-redis", "github.com/gorilla/websocket",
	"net/http.(*persistConn)", "net/http.(*conn).serve",
}

// VerifyOwnTestMain runs the package's tests and then fails the test
// binary when goroutines running meshchat code (or code whose stack holds
// one of extra, such as "hashicorp/memberlist") are still alive after a
// grace period. Unlike VerifyTestMain it ignores goroutines that only run
// other standard-library or third-party code (an HTTP client's idle
// keep-alive connections, say), for packages whose tests leave those.
func VerifyOwnTestMain(m *testing.M, extra ...string) {
	code := m.Run()
	if code == 0 {
		if err := CheckOwnGoroutines(leakTimeout, extra...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// CheckOwnGoroutines waits up to timeout until no goroutine runs meshchat
// code (or code whose stack holds one of extra), other than the caller's,
// and reports the survivors otherwise. It is VerifyOwnTestMain's check,
// for a TestMain with work of its own to do around it.
func CheckOwnGoroutines(timeout time.Duration, extra ...string) error {
	var left []string
	deadline := time.Now().Add(timeout)
	for {
		left = ownGoroutines(extra)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("goroutine leak: %d left\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// ownGoroutines returns the stacks of goroutines running or started by
// meshchat code or code matching extra, other than the calling one.
func ownGoroutines(extra []string) []string {
	self := goroutineID(stacks1())
	var own []string
	for _, g := range stacks() {
		if goroutineID(g) == self || strings.Contains(g, ".TestMain(") {
			continue
		}
		for _, p := range append([]string{"github.com/meshchat/meshchat/"}, extra...) {
			if strings.Contains(g, p) {
				own = append(own, g)
				break
			}
		}
	}
	return own
}
