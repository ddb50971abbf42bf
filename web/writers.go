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
type writers struct {
	idle time.Duration
	// next hands a job to a waiting writer. Unbuffered: a send succeeds
	// only when a writer is waiting, so work never queues behind a
	// writer stuck on a full socket.
	next chan writeJob
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	live atomic.Int32 // writer goroutines, for tests
}

func newWriters(idle time.Duration) *writers {
	return &writers{idle: idle, next: make(chan writeJob), quit: make(chan struct{})}
}

// run has job run on a waiting writer, or on a new one when none waits.
// It never blocks.
func (p *writers) run(job writeJob) {
	select {
	case p.next <- job:
	default:
		p.wg.Add(1)
		p.live.Add(1)
		go p.work(job)
	}
}

func (p *writers) work(job writeJob) {
	defer p.wg.Done()
	defer p.live.Add(-1)
	idle := time.NewTimer(p.idle)
	defer idle.Stop()
	for job != nil {
		job.write()
		job = p.wait(idle)
	}
}

// wait returns the next job, or nil when the writer is to exit: on
// close, or after idle without a job. The timer is not reset per job
// (that would re-arm a runtime timer per delivery): when it fires early
// it is set for the rest of the idle time.
func (p *writers) wait(idle *time.Timer) writeJob {
	last := time.Now()
	for {
		select {
		case job := <-p.next:
			return job
		case <-p.quit:
			return nil
		case <-idle.C:
			d := time.Since(last)
			if d >= p.idle {
				return nil
			}
			idle.Reset(p.idle - d)
		}
	}
}

// close makes waiting writers exit and waits for every writer to end;
// running ones finish their job first. run must not be called after.
func (p *writers) close() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}
