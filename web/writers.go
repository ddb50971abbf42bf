package web

import (
	"sync"
	"sync/atomic"
	"time"
)

// writerIdle is how long a writer goroutine waits for another
// connection's batch before it exits.
const writerIdle = 2 * time.Second

// writeJob is what a writer goroutine runs: a connection's writer.
type writeJob interface{ write() }

// writers runs connection writers on goroutines that outlive one batch.
//
// A writer's stack grows to the depth of a socket write (gorilla, the
// corked connection, the runtime's poller), past the 2 KiB a new
// goroutine starts with. With a fresh goroutine per batch, and a client
// that gets one frame at a time (the usual case in a busy room), every
// delivery paid for growing, and so copying, that stack: about a sixth
// of a node's CPU under fan-out. A goroutine that finished a batch here
// waits up to idle for the next connection to write instead, its stack
// already grown (until a collection finds it mostly unused and halves
// it); so a busy node keeps about as many writers as it has sockets
// being written at once, and an idle node keeps none.
//
// Waiting writers form a stack: run hands a job to the one that waited
// least (its stack and caches are the warmest) and the ones at the
// bottom, idle longest, are let go by a timer that runs only while some
// wait. A waiting writer blocks on a channel of its own, with no select
// and no timer of its own, so a hand-off costs one lock and one channel
// send. The lock is one for the whole server, held for a slice push or
// pop: under fan-out on two cores, run (lock and send together) is about
// 4% of a node's CPU; more cores would call for a pool per shard.
type writers struct {
	idle time.Duration

	mu      sync.Mutex
	waiting []*writer   // bottom: idle longest; top: most recent
	reaper  *time.Timer // lets go of writers idle too long; nil: not armed
	closed  bool

	wg   sync.WaitGroup
	live atomic.Int32 // writer goroutines, for tests
}

// writer is one pooled goroutine.
type writer struct {
	jobs  chan writeJob // capacity 1; nil job: exit
	since time.Time     // when it began to wait; under writers.mu
}

func newWriters(idle time.Duration) *writers {
	return &writers{idle: idle}
}

// run has job run on a waiting writer, or on a new one when none waits.
// It never blocks.
func (p *writers) run(job writeJob) {
	p.mu.Lock()
	if n := len(p.waiting); n > 0 && !p.closed {
		w := p.waiting[n-1]
		p.waiting[n-1] = nil
		p.waiting = p.waiting[:n-1]
		p.mu.Unlock()
		w.jobs <- job // never blocks: the writer took its last job
		return
	}
	p.mu.Unlock()
	w := &writer{jobs: make(chan writeJob, 1)}
	p.wg.Add(1)
	p.live.Add(1)
	go p.work(w, job)
}

func (p *writers) work(w *writer, job writeJob) {
	defer p.wg.Done()
	defer p.live.Add(-1)
	for job != nil {
		job.write()
		if !p.park(w) {
			return
		}
		job = <-w.jobs
	}
}

// park puts w on the waiting stack, or reports false when the pool is
// closed.
func (p *writers) park(w *writer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	w.since = time.Now()
	p.waiting = append(p.waiting, w)
	if p.reaper == nil {
		p.reaper = time.AfterFunc(p.idle, p.reap)
	}
	return true
}

// reap lets go of the writers that have waited idle or longer, and runs
// again while any are left waiting.
func (p *writers) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	now := time.Now()
	n := 0
	for n < len(p.waiting) && now.Sub(p.waiting[n].since) >= p.idle {
		p.waiting[n].jobs <- nil
		n++
	}
	p.waiting = append(p.waiting[:0], p.waiting[n:]...)
	clear(p.waiting[len(p.waiting) : len(p.waiting)+n])
	if len(p.waiting) == 0 {
		p.reaper = nil
		return
	}
	// Next when the oldest left would have waited idle.
	p.reaper.Reset(p.idle - now.Sub(p.waiting[0].since))
}

// close makes waiting writers exit and waits for every writer to end;
// running ones finish their job first. run must not be called after.
func (p *writers) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.reaper != nil {
			p.reaper.Stop()
		}
		for _, w := range p.waiting {
			w.jobs <- nil
		}
		p.waiting = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
}
