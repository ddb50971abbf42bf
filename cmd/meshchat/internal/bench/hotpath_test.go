package bench

import (
	"testing"
	"time"
)

// hotClient returns a client of a one-room run with two publishers,
// ready to handle frames as its reader would.
func hotClient() *client {
	r := newRunner(Scenario{Name: "x", Clients: 10, Rooms: 1, Publishers: 2, Rate: 1e5, Size: 100, Duration: time.Second}, Config{ConnectConcurrency: 1}, []string{"http://127.0.0.1:1"}, nil, discardLogger(), nil)
	r.build()
	r.phase.Store(phaseMeasure)
	return r.clients[5]
}

func messageFrame(c *client, pub int, seq int64) []byte {
	b := []byte(`{"type":"message","room":"` + c.roomName + `","id":"1234567","from":"someone","text":"`)
	b = appendText(b, pub, seq, time.Now().UnixNano(), 100, c.r.pad)
	return append(b, `","ts":1732280000000}`...)
}

// TestHandleDoesNotAllocate holds the receive path to its promise: the
// generator shares the box with the server, so its per-delivery cost is
// kept flat.
func TestHandleDoesNotAllocate(t *testing.T) {
	c := hotClient()
	frames := make([][]byte, 200)
	for i := range frames {
		frames[i] = messageFrame(c, i%2, int64(i))
	}
	now := time.Now().UnixNano()
	i := 0
	allocs := testing.AllocsPerRun(len(frames)-1, func() {
		c.handle(frames[i], now)
		i++
	})
	if allocs != 0 {
		t.Fatalf("handle allocates %v per frame", allocs)
	}
	if c.deliveries.Load() != int64(len(frames)) || c.dups.Load() != 0 {
		t.Fatalf("deliveries %d dups %d", c.deliveries.Load(), c.dups.Load())
	}
}

func BenchmarkHandleMessage(b *testing.B) {
	c := hotClient()
	frame := messageFrame(c, 1, 0)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		c.handle(frame, now) // the same seq each time: the duplicate path costs the same
	}
}

func BenchmarkPublisherFrame(b *testing.B) {
	c := hotClient()
	p := c.r.clients[0].pub
	b.ReportAllocs()
	var seq int64
	for b.Loop() {
		p.frame(seq, time.Now().UnixNano())
		seq++
	}
}
