package web

import (
	"net"
	"syscall"
	"unsafe"
)

// unsent reports how many bytes conn's socket holds that its peer has
// not acknowledged yet (SIOCOUTQ); false when conn is no TCP socket.
func unsent(conn net.Conn) (int, bool) {
	tc := tcpConn(conn)
	if tc == nil {
		return 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}
