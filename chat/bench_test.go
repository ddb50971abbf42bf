package chat

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/transport"
)

func BenchmarkEncodeMessage(b *testing.B) {
	p := pubInfo{offset: 123456, epoch: "c4c89a79003ee130", ts: 1732280000000}
	text := strings.Repeat("hello world ", 8)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendMessage(buf[:0], "general", p, "alice", text)
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	in := []byte(`{"type":"send","room":"general","text":"hello world, how are you","ref":"c123"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeFrame(in, DefaultMaxTextBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// roomWithMembers puts n fresh clients (u0, u1, ...) straight into a room
// of a new single-node hub, for measuring fan-out; tb's cleanup takes
// them out again.
func roomWithMembers(tb testing.TB, n int) (*Hub, *room, []*Client) {
	tb.Helper()
	h := newHub(tb, nil, "n1", func(c *Config) { c.QueueBytes = 1 << 30 })
	ctx := context.Background()
	r := h.acquire(roomPrefix + "general")
	if err := h.ensureSubscribed(ctx, r); err != nil {
		tb.Fatal(err)
	}
	clients := make([]*Client, n)
	for i := range clients {
		c, err := h.Connect(ctx, fmt.Sprintf("u%d", i), "")
		if err != nil {
			tb.Fatal(err)
		}
		clients[i] = c
		r.mu.Lock()
		r.members[c] = &member{}
		r.mu.Unlock()
	}
	tb.Cleanup(func() {
		for _, c := range clients {
			r.mu.Lock()
			delete(r.members, c)
			r.mu.Unlock()
			_ = c.Close(ctx)
		}
		h.release(ctx, r)
	})
	return h, r, clients
}

// BenchmarkFanOut measures delivering one stored publication to n local
// members of a room: decode once, encode once, queue n times; the
// writers' drain is included.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h, r, clients := roomWithMembers(b, n)
			ev := event{Kind: kindMessage, User: "u0", Text: strings.Repeat("hello world ", 8), Conn: clients[0].id, Ref: "c1"}
			pub := transport.Publication{Epoch: "c4c89a79003ee130", Time: 1732280000000, Data: ev.marshal()}
			var sink [][]byte
			for _, c := range clients {
				sink = c.Drain(sink[:0])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				pub.Offset = uint64(i + 1)
				h.HandlePublication(r.channel, pub)
				for _, c := range clients {
					sink = c.Drain(sink[:0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/member")
		})
	}
}

// Encoding a message frame into a buffer with room for it allocates
// nothing: the fan-out path encodes once per publication.
func TestEncodeMessageAllocs(t *testing.T) {
	p := pubInfo{offset: 123456, epoch: "c4c89a79003ee130", ts: 1732280000000}
	text := strings.Repeat("hello world ", 8)
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() {
		buf = appendMessage(buf[:0], "general", p, "alice", text)
	}); n != 0 {
		t.Fatalf("appendMessage allocates %v times per frame", n)
	}
}

// Delivering a publication costs the same allocations for 1 member as for
// 200: the frame is decoded and encoded once per node, and queueing it on
// a member allocates nothing once the member's queue has grown.
func TestFanOutAllocsPerPublicationNotPerMember(t *testing.T) {
	measure := func(n int) float64 {
		h, r, clients := roomWithMembers(t, n)
		ev := event{Kind: kindMessage, User: "u0", Text: "hello", Conn: clients[0].id, Ref: "c1"}
		pub := transport.Publication{Epoch: "e", Time: 1732280000000, Data: ev.marshal()}
		var sink [][]byte
		deliver := func() {
			pub.Offset++
			h.HandlePublication(r.channel, pub)
			for _, c := range clients {
				sink = c.Drain(sink[:0])
			}
		}
		deliver() // grow the queues once
		return testing.AllocsPerRun(50, deliver)
	}
	one, many := measure(1), measure(200)
	if many > one {
		t.Fatalf("a publication allocates %v times for 1 member but %v for 200", one, many)
	}
}
