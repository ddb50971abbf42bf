package bench

import "syscall"

// childAttr makes spawned nodes die with the bench, so an interrupted run
// leaves no cluster behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
