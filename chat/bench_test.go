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

// BenchmarkFanOut measures delivering one stored publication to n local
// members of a room: decode once, encode once, queue n times; the
// writers' drain is included.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHub(b, nil, "n1", func(c *Config) { c.QueueBytes = 1 << 30 })
			ctx := context.Background()
			r := h.acquire(roomPrefix + "general")
			if err := h.ensureSubscribed(ctx, r); err != nil {
				b.Fatal(err)
			}
			clients := make([]*Client, n)
			for i := range clients {
				c, err := h.Connect(ctx, fmt.Sprintf("u%d", i), "")
				if err != nil {
					b.Fatal(err)
				}
				clients[i] = c
				r.mu.Lock()
				r.members[c] = &member{}
				r.mu.Unlock()
			}
			b.Cleanup(func() {
				for _, c := range clients {
					r.mu.Lock()
					delete(r.members, c)
					r.mu.Unlock()
					_ = c.Close(ctx)
				}
				h.release(ctx, r)
			})
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
