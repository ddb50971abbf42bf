package web

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// jobFunc adapts a func to writeJob.
type jobFunc func()

func (f jobFunc) write() { f() }

func TestWritersReuseGoroutines(t *testing.T) {
	p := newWriters(time.Minute)
	defer p.close()
	var ran atomic.Int32
	for i := range 100 {
		// Once the previous job's writer waits again, the next job goes
		// to it.
		clustertest.WaitFor(t, waitFor, "the writer to wait", func() bool { return ran.Load() == int32(i) && p.waitingCount() == int(p.live.Load()) })
		p.run(jobFunc(func() { ran.Add(1) }))
	}
	clustertest.WaitFor(t, waitFor, "every job", func() bool { return ran.Load() == 100 })
	if n := p.live.Load(); n != 1 {
		t.Errorf("%d writer goroutines for 100 jobs in a row, want 1", n)
	}
}

// waitingCount is how many writers wait for a job.
func (p *writers) waitingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
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
	clustertest.WaitFor(t, waitFor, "idle writers to exit", func() bool { return p.live.Load() == 0 })
	// The pool works again after letting everyone go.
	done := make(chan struct{})
	p.run(jobFunc(func() { close(done) }))
	<-done
	clustertest.WaitFor(t, waitFor, "the new writer to exit", func() bool { return p.live.Load() == 0 })
}

// TestWritersKeepTheBusyOne: with writers that have waited idle let go,
// one kept busy stays, and only it.
func TestWritersKeepTheBusyOne(t *testing.T) {
	p := newWriters(100 * time.Millisecond)
	defer p.close()
	release := make(chan struct{})
	var started sync.WaitGroup
	for range 3 {
		started.Add(1)
		p.run(jobFunc(func() {
			started.Done()
			<-release
		}))
	}
	started.Wait()
	close(release)
	clustertest.WaitFor(t, waitFor, "the writers to wait", func() bool { return p.waitingCount() == int(p.live.Load()) })
	// Keep one busy: each job goes to the writer that waited least, so
	// the other two wait on and are let go.
	for deadline := time.Now().Add(waitFor); p.live.Load() > 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d writers still there: the busy one's jobs went around", p.live.Load())
		}
		done := make(chan struct{})
		p.run(jobFunc(func() { close(done) }))
		<-done
		clustertest.WaitFor(t, waitFor, "the busy writer to wait", func() bool { return p.waitingCount() == int(p.live.Load()) })
	}
	// (A stall longer than idle on a loaded machine may let the busy one
	// go too; only the writers that waited idle are ever let go.)
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
	clustertest.WaitFor(t, waitFor, "the second writer to wait", func() bool { return p.waitingCount() == 1 })
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
