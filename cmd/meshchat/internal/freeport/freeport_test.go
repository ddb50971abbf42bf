package freeport

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

func TestNextSkipsBusyAndTaken(t *testing.T) {
	base := clustertest.FreePort(t, true)
	busy, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var s Set
	a, err := s.Next("127.0.0.1", base, false)
	if err != nil || a <= base {
		t.Fatalf("Next from a busy port = %d, %v; want a later port", a, err)
	}
	b, err := s.Next("127.0.0.1", base, true)
	if err != nil || b == a || b <= base {
		t.Fatalf("second Next = %d, %v; want a port other than %d and %d", b, err, base, a)
	}
	if _, err := s.Next("127.0.0.1", 65535+1, false); !errors.Is(err, ErrNone) {
		t.Fatalf("Next past the range: %v", err)
	}
}
