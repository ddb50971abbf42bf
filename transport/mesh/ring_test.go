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

// A snapshot's idempotency records share the publications of the history
// they answer with, instead of keeping a copy of every message of the
// dedupe window.
func TestSnapshotDedupeSharesHistory(t *testing.T) {
	snap := &snapshot{Epoch: "e", Offset: 10}
	for i := uint64(1); i <= 10; i++ {
		data := []byte(fmt.Sprintf("message %d", i))
		snap.Pubs = append(snap.Pubs, transport.Publication{Offset: i, Epoch: "e", Data: data})
		// Decoded apart, as from the wire or the log.
		snap.Dedupe = append(snap.Dedupe, dedupeEntry{key: fmt.Sprint("k", i), pub: transport.Publication{Offset: i, Epoch: "e", Data: slices.Clone(data)}})
	}
	// One record whose publication left the history keeps its own.
	snap.Dedupe = append(snap.Dedupe, dedupeEntry{key: "old", pub: transport.Publication{Offset: 11, Epoch: "other", Data: []byte("x")}})
	b := &Broker{}
	s := newChanState("r:x", 5)
	b.applySnapshot(s, snap)
	for i := uint64(1); i <= 10; i++ {
		d := s.dedupe[fmt.Sprint("k", i)]
		p, inHistory := s.hist.find(i)
		if shared := inHistory && &d.pub.Data[0] == &p.Data[0]; shared != (i > 5) {
			t.Errorf("record of offset %d shares the history's copy: %v, want %v", i, shared, i > 5)
		}
		if string(d.pub.Data) != fmt.Sprintf("message %d", i) {
			t.Errorf("record of offset %d holds %q", i, d.pub.Data)
		}
	}
	if d := s.dedupe["old"]; string(d.pub.Data) != "x" {
		t.Errorf("record of another epoch holds %q", d.pub.Data)
	}
}
