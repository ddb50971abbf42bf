//go:build !linux

package web

import "net"

// unsent reports how many bytes conn's socket holds that its peer has
// not acknowledged yet; it is known on Linux only.
func unsent(net.Conn) (int, bool) { return 0, false }
