//go:build !linux

package bench

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }

// slowSockControl is a no-op here: only Linux gets the small segment size
// (see sys_linux.go).
func slowSockControl(_, _ string, _ syscall.RawConn) error { return nil }
