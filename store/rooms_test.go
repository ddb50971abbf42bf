package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/inproc"
)

type roomsNode struct {
	*Rooms
	mu      sync.Mutex
	removed []string // "room/user"
}

func startRooms(t *testing.T, b transport.Broker, node string, mod func(*RoomsConfig)) *roomsNode {
	t.Helper()
	cfg := RoomsConfig{Node: node, Broker: b}
	if mod != nil {
		mod(&cfg)
	}
	rs, err := NewRooms(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &roomsNode{Rooms: rs}
	ctx := context.Background()
	if err := b.Start(ctx, rs); err != nil {
		t.Fatal(err)
	}
	err = rs.Start(ctx, func(room, user string) {
		n.mu.Lock()
		n.removed = append(n.removed, room+"/"+user)
		n.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("broker close: %v", err)
		}
	})
	brokertest.Eventually(t, node+" loaded", rs.Loaded)
	return n
}

func TestPrivateRooms(t *testing.T) {
	net := inproc.NewNetwork()
	n1 := startRooms(t, smallBroker(t, net, "n1", 0), "n1", nil)
	n2 := startRooms(t, smallBroker(t, net, "n2", 0), "n2", nil)
	ctx := context.Background()
	if p, _ := n1.Access("secret", "alice"); p {
		t.Fatal("an unknown room is private")
	}
	if err := n1.Create(ctx, "secret", "alice"); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "room known on n2", func() bool { p, _ := n2.Access("secret", "alice"); return p })
	if _, m := n2.Access("secret", "alice"); !m {
		t.Fatal("the owner is not a member")
	}
	if _, m := n2.Access("secret", "bob"); m {
		t.Fatal("bob is a member uninvited")
	}
	if err := n2.Create(ctx, "secret", "bob"); !errors.Is(err, ErrRoomTaken) {
		t.Fatalf("second creation: %v", err)
	}
	if err := n2.Invite(ctx, "secret", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, m := n2.Access("secret", "bob"); !m {
		t.Fatal("invitation not applied on the node that made it")
	}
	if err := n1.Remove(ctx, "secret", "alice"); !errors.Is(err, ErrRemoveOwner) {
		t.Fatalf("removing the owner: %v", err)
	}
	if err := n2.Invite(ctx, "nowhere", "bob"); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("invite to an unknown room: %v", err)
	}
	brokertest.Eventually(t, "bob invited on n1", func() bool { _, m := n1.Access("secret", "bob"); return m })
	if err := n1.Remove(ctx, "secret", "bob"); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "n2 told of the removal", func() bool {
		n2.mu.Lock()
		defer n2.mu.Unlock()
		return len(n2.removed) == 1 && n2.removed[0] == "secret/bob"
	})
	if _, m := n2.Access("secret", "bob"); m {
		t.Fatal("bob still a member after removal")
	}
}

func TestPrivateRoomCreateRace(t *testing.T) {
	net := inproc.NewNetwork()
	var nodes []*roomsNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, startRooms(t, smallBroker(t, net, name, 0), name, nil))
	}
	for round := range 20 {
		room := fmt.Sprintf("r%d", round)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := n.Create(context.Background(), room, fmt.Sprintf("owner%d", i))
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, ErrRoomTaken) {
					t.Errorf("create: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d creations won", round, wins.Load())
		}
	}
}

// A node started after more changes than the channel retains knows every
// private room and its members.
func TestPrivateRoomsOutliveRetention(t *testing.T) {
	const retained = 30
	net := inproc.NewNetwork()
	snap := func(c *RoomsConfig) { c.SnapshotEvery = 6 }
	n1 := startRooms(t, smallBroker(t, net, "n1", retained), "n1", snap)
	ctx := context.Background()
	for i := range 40 {
		room := fmt.Sprintf("r%d", i)
		if err := n1.Create(ctx, room, "owner"); err != nil {
			t.Fatal(err)
		}
		if err := n1.Invite(ctx, room, "guest"); err != nil {
			t.Fatal(err)
		}
	}
	n2 := startRooms(t, smallBroker(t, net, "n2", retained), "n2", snap)
	for i := range 40 {
		if p, m := n2.Access(fmt.Sprintf("r%d", i), "guest"); !p || !m {
			t.Fatalf("late node: r%d private %v, guest member %v", i, p, m)
		}
	}
}
