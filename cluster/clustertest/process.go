package clustertest

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a program a test runs (redis-server, nginx, a meshchat
// binary): started in a process group of its own, so that a ^C to the test
// binary does not race the test's own stop, and waited for by one
// goroutine.
type Process struct {
	Cmd *exec.Cmd
	// Out holds what the program wrote when Cmd had no Stdout or Stderr
	// of its own.
	Out  *Buffer
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// StartProcess starts cmd.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Cmd: cmd, Out: &Buffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process ended (Wait's error), once it has.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends sig, waits up to grace for the process to exit, kills it
// after that, and returns once it has exited. Safe to call when it has
// already exited.
func (p *Process) Stop(sig os.Signal, grace time.Duration) {
	if !p.Running() {
		return
	}
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill stops the process with SIGKILL, like a crash, and waits for it.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}
