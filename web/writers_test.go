package web

import (
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
		// Once the previous job's writer waits again, a job goes to it.
		// waiting counts a writer a moment before it parks, and a job
		// that finds none parked starts a new one (harmless, but not
		// reuse), hence the pause.
		waitUntil(t, "writers to wait", func() bool { return ran.Load() == int32(i) && p.waiting.Load() == p.live.Load() })
		time.Sleep(time.Millisecond)
		p.run(jobFunc(func() { ran.Add(1) }))
	}
	waitUntil(t, "every job", func() bool { return ran.Load() == 100 })
	// Without reuse this is 100; a loaded machine may now and then
	// start one more.
	if n := p.live.Load(); n > 5 {
		t.Errorf("%d writer goroutines for 100 jobs in a row, want about 1", n)
	}
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
	waitUntil(t, "the second writer to wait", func() bool { return p.waiting.Load() == 1 })
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
