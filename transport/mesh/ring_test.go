package mesh

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

func TestRing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size, push int
		want       []uint64
	}{
		{"disabled", 0, 3, nil},
		{"empty", 5, 0, nil},
		{"partial", 5, 3, brokertest.Seq(1, 3)},
		{"exactly full", 5, 5, brokertest.Seq(1, 5)},
		{"wrapped", 5, 12, brokertest.Seq(8, 12)},
		{"grows past first chunk", 20, 17, brokertest.Seq(1, 17)},
		{"wraps after growing", 20, 47, brokertest.Seq(28, 47)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ring{size: tc.size}
			for i := 1; i <= tc.push; i++ {
				r.push(transport.Publication{Offset: uint64(i)})
			}
			if got := brokertest.Offsets(r.slice(0, r.len())); !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
				t.Fatalf("all() = %v, want %v", got, tc.want)
			}
			if cap(r.buf) > tc.size {
				t.Fatalf("ring of size %d holds a buffer of %d", tc.size, cap(r.buf))
			}
			r.reset()
			if r.len() != 0 || r.buf != nil {
				t.Fatalf("reset left %d publications", r.len())
			}
		})
	}
}

// A channel that retains nothing yet costs no history memory: every user's
// DM inbox is a channel, kept on its owner and its backup.
func TestNewChannelHasNoHistoryBuffer(t *testing.T) {
	s := newChanState("u:alice", transport.DefaultHistorySize)
	if cap(s.hist.buf) != 0 {
		t.Fatalf("new channel preallocates %d history slots", cap(s.hist.buf))
	}
}

// Owner agrees with the broker's own ranking.
func TestOwnerMatchesRanking(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4"}
	ps := &peerSet{}
	for _, n := range names {
		ps.list = append(ps.list, transport.Peer{Name: n})
	}
	for i := range 200 {
		ch := fmt.Sprintf("r:room%d", i)
		if got, want := Owner(names, ch), ownerIn(ps, ch).Name; got != want {
			t.Fatalf("Owner(%s) = %s, ranking says %s", ch, got, want)
		}
	}
}
