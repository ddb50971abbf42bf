package bench

import "syscall"

// childAttr makes spawned nodes die with the bench, so an interrupted run
// leaves no cluster behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// slowMSS is the segment size a slow client announces. On loopback the
// MSS is about 64 KiB, and Linux sizes a socket's send buffer in
// segments: the server would absorb megabytes of a slow client's backlog
// in its kernel, out of its queue's sight. 1400 bytes is what an internet
// client announces.
const slowMSS = 1400

// slowSockControl runs before a slow client's connect.
func slowSockControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, slowMSS)
	}); err != nil {
		return err
	}
	return serr
}
