package web

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/web/webtest"
)

// The idle-memory harness measures what a server holds per idle
// WebSocket connection: heap, goroutine stacks, and everything the Go
// runtime has taken from the system. The clients live in a child process
// (this test binary, re-run as TestIdleClients) so that their own memory
// does not count.
//
//	go test -run '^$' -bench IdleConnMemory -benchtime 1x ./web/
const (
	idleEnvTarget  = "MESHCHAT_IDLE_TARGET"
	idleEnvClients = "MESHCHAT_IDLE_CLIENTS"
	idleEnvPrefix  = "MESHCHAT_IDLE_PREFIX"
	idleRooms      = 100
)

// TestIdleClients is the child of the harness: it opens the connections
// and holds them until its standard input closes. It does nothing in an
// ordinary test run.
func TestIdleClients(t *testing.T) {
	target := os.Getenv(idleEnvTarget)
	if target == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(idleEnvClients))
	if err != nil {
		t.Fatal(err)
	}
	prefix := os.Getenv(idleEnvPrefix)
	// Raw connections that read nothing after their joined frame: a
	// webtest.Conn's reader and frame queue, thousands of times over,
	// would make this process far bigger than the server it measures.
	conns := make([]*websocket.Conn, 0, n)
	for i := range n {
		s := webtest.Login(t, target, fmt.Sprintf("%s%d", prefix, i))
		conn, _, err := webtest.TryDial(target, s, webtest.DialOptions{ReadBuffer: wsReadBuffer})
		if err != nil {
			t.Fatal(err)
		}
		room := fmt.Sprintf("%sr%d", prefix, i%idleRooms)
		if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","room":"`+room+`"}`)); err != nil {
			t.Fatal(err)
		}
		// Read until joined; what arrives later (presence of those who
		// join after) stays in the socket buffers.
		for {
			_ = conn.SetReadDeadline(time.Now().Add(waitFor))
			_, data, err := conn.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte(`"type":"joined"`)) {
				break
			}
		}
		conns = append(conns, conn)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// memSample is what the runtime holds after a full collection.
type memSample struct {
	heap, stacks, sys uint64
	goroutines        int
}

func sampleMem() memSample {
	// Two cycles: finalizers and sync.Pool victims from the first.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{
		heap:       ms.HeapInuse,
		stacks:     ms.StackInuse,
		sys:        ms.HeapInuse + ms.StackInuse + ms.HeapIdle - ms.HeapReleased,
		goroutines: runtime.NumGoroutine(),
	}
}

// idleConnMemory opens n idle connections (one user each, joined to one
// of 100 rooms, as `meshchat bench --scenario idle` does) against a
// single node and reports the growth per connection.
func idleConnMemory(t testing.TB, n int) (perConn memSample) {
	e := newEnv(t, envOpts{})
	// Warm the server's pools and lazily built state with a first few
	// connections, so the baseline is not the empty process.
	runIdleClients(t, e, 20, "w", func() {})
	before := sampleMem()
	var after memSample
	runIdleClients(t, e, n, "m", func() {
		// Let the writers finish the presence traffic of the last joins.
		clustertest.Eventually(waitFor, func() bool { return e.hub.Clients() >= n })
		after = sampleMem()
		if f := os.Getenv("MESHCHAT_IDLE_HEAPPROFILE"); f != "" {
			out, err := os.Create(f)
			if err != nil {
				t.Fatal(err)
			}
			_ = pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
	})
	per := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return (a - b) / uint64(n)
	}
	return memSample{
		heap:       per(after.heap, before.heap),
		stacks:     per(after.stacks, before.stacks),
		sys:        per(after.sys, before.sys),
		goroutines: after.goroutines - before.goroutines,
	}
}

// runIdleClients starts the child with n connections, calls held once
// they are all joined, then lets the child go and waits for the hub to
// forget its clients.
func runIdleClients(t testing.TB, e *env, n int, prefix string, held func()) {
	t.Helper()
	base := e.hub.Clients()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClients$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleEnvTarget+"="+e.ts.URL, idleEnvClients+"="+strconv.Itoa(n), idleEnvPrefix+"="+prefix)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	if !ready {
		_ = cmd.Wait()
		t.Fatalf("idle clients failed: %s", stderr.String())
	}
	held()
	stdin.Close()
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("idle clients: %v: %s", err, stderr.String())
	}
	if !clustertest.Eventually(waitFor, func() bool { return e.hub.Clients() <= base }) {
		t.Fatalf("%d clients still connected", e.hub.Clients()-base)
	}
}

// BenchmarkIdleConnMemory reports bytes per idle connection: heap-B/conn
// (live heap spans), stack-B/conn (goroutine stacks) and sys-B/conn
// (heap and stacks the runtime holds, including free spans it has not
// returned: closest to resident memory).
func BenchmarkIdleConnMemory(b *testing.B) {
	n := 2000
	if v := os.Getenv(idleEnvClients); v != "" {
		n, _ = strconv.Atoi(v)
	}
	var m memSample
	for range b.N {
		m = idleConnMemory(b, n)
	}
	b.ReportMetric(float64(m.heap), "heap-B/conn")
	b.ReportMetric(float64(m.stacks), "stack-B/conn")
	b.ReportMetric(float64(m.sys), "sys-B/conn")
	b.ReportMetric(float64(m.goroutines)/float64(n), "goroutines/conn")
}

// TestIdleConnMemory keeps the figure from regressing: a generous bound
// well above what the harness measures, so that it fails only when
// something per connection comes back (a goroutine, a buffer).
func TestIdleConnMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	const n = 300
	m := idleConnMemory(t, n)
	t.Logf("per idle connection: heap %d B, stacks %d B, sys %d B, goroutines %d", m.heap, m.stacks, m.sys, m.goroutines)
	// One goroutine per connection (the parked reader); a few spare for
	// timers and writers that have not quite exited.
	if m.goroutines > n+n/10 {
		t.Errorf("%d goroutines for %d idle connections, want about one each", m.goroutines, n)
	}
	if m.heap > 16<<10 {
		t.Errorf("heap %d B per idle connection, want well under 16 KiB", m.heap)
	}
}
