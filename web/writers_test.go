package web

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// jobFunc adapts a func to writeJob.
type jobFunc func()

func (f jobFunc) write() { f() }

func TestWritersReuseGoroutines(t *testing.T) {
	p := newWriters(time.Minute)
	defer p.close()
	var ran atomic.Int32
	for i := range 100 {
		// Once the previous job's writer is parked waiting again, the
		// next job goes to it.
		waitUntil(t, "the writer to park", func() bool { return ran.Load() == int32(i) && parkedWriters() == int(p.live.Load()) })
		p.run(jobFunc(func() { ran.Add(1) }))
	}
	waitUntil(t, "every job", func() bool { return ran.Load() == 100 })
	if n := p.live.Load(); n != 1 {
		t.Errorf("%d writer goroutines for 100 jobs in a row, want 1", n)
	}
}

// parkedWriters counts the goroutines blocked in writers.wait's select:
// a job handed to the pool now goes to one of them.
func parkedWriters() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "web.(*writers).wait(") {
			n++
		}
	}
	return n
}

func TestWritersRunConcurrentJobsAtOnce(t *testing.T) {
	p := newWriters(time.Minute)
	defer p.close()
	// A job blocked (as on a full socket) never holds up another.
	release := make(chan struct{})
	p.run(jobFunc(func() { <-release }))
	done := make(chan struct{})
	p.run(jobFunc(func() { close(done) }))
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("second job waited for the blocked one")
	}
	close(release)
}

func TestWritersExitWhenIdle(t *testing.T) {
	p := newWriters(20 * time.Millisecond)
	defer p.close()
	for range 3 {
		p.run(jobFunc(func() {}))
	}
	waitUntil(t, "idle writers to exit", func() bool { return p.live.Load() == 0 })
}

func TestWritersCloseWaitsForRunningJobs(t *testing.T) {
	p := newWriters(time.Minute)
	release := make(chan struct{})
	var finished atomic.Bool
	p.run(jobFunc(func() {
		<-release
		finished.Store(true)
	}))
	p.run(jobFunc(func() {})) // a second writer, soon waiting
	waitUntil(t, "the second writer to wait", func() bool { return parkedWriters() == 1 })
	closed := make(chan struct{})
	go func() {
		p.close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("close returned while a job was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	if !finished.Load() {
		t.Error("close returned before the running job finished")
	}
	if n := p.live.Load(); n != 0 {
		t.Errorf("%d writers left after close", n)
	}
}
