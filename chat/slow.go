package chat

import (
	"sync"
	"time"
)

// SlowLogSize is how many slow-consumer disconnects the hub remembers
// (SlowConsumers): the latest ones, for the admin view.
const SlowLogSize = 32

// SlowConsumer is a connection the hub closed because it read too slowly
// (CloseSlowConsumer).
type SlowConsumer struct {
	User string
	Conn string // the connection's id (Client.ID)
	At   time.Time
}

// slowLog is a ring of the latest SlowLogSize slow-consumer disconnects.
// Its lock is a leaf: add runs under Client.mu (and the room's lock
// above it), and takes nothing else. A slow consumer is rare, so a lock
// there costs the fan-out nothing in the common case.
type slowLog struct {
	mu   sync.Mutex
	ring [SlowLogSize]SlowConsumer
	n    int // how many were ever added
}

func (l *slowLog) add(e SlowConsumer) {
	l.mu.Lock()
	l.ring[l.n%SlowLogSize] = e
	l.n++
	l.mu.Unlock()
}

// SlowConsumers returns the latest slow-consumer disconnects on this
// node, newest first, at most SlowLogSize of them.
func (h *Hub) SlowConsumers() []SlowConsumer {
	l := &h.slow
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(l.n, SlowLogSize)
	out := make([]SlowConsumer, 0, k)
	for i := 1; i <= k; i++ {
		out = append(out, l.ring[(l.n-i)%SlowLogSize])
	}
	return out
}
