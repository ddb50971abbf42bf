package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// wireTap is a TCP proxy in front of a node's HTTP server. It records the
// payloads of the WebSocket data frames peers write to the node,
// unmasked (as the writer built them), and everything the node answers;
// armed, it flips a bit in the last byte of the next data frame.
type wireTap struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	sent     [][]byte
	answered bytes.Buffer
	flip     bool
	conns    []net.Conn

	wg sync.WaitGroup
}

// tapNode puts a wireTap in front of node i of a test cluster: peers
// dial the tap, which forwards to the node's server.
func tapNode(t *testing.T, cfg *Config) *wireTap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &wireTap{ln: ln, target: strings.TrimPrefix(cfg.Self.Addr, "http://")}
	cfg.Self.Addr = "http://" + ln.Addr().String()
	tap.wg.Add(1)
	go tap.accept()
	t.Cleanup(func() {
		ln.Close()
		tap.mu.Lock()
		for _, c := range tap.conns {
			c.Close()
		}
		tap.mu.Unlock()
		tap.wg.Wait()
	})
	return tap
}

func (w *wireTap) accept() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", w.target)
		if err != nil {
			c.Close()
			continue
		}
		w.mu.Lock()
		w.conns = append(w.conns, c, s)
		w.mu.Unlock()
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			defer c.Close()
			_, _ = io.Copy(&lockedWriter{w: c, tee: &w.answered, mu: &w.mu}, s)
		}()
		go func() {
			defer w.wg.Done()
			defer s.Close()
			_ = w.forward(bufio.NewReader(c), s)
		}()
	}
}

// lockedWriter writes to w, and to tee under mu. (Here w is the
// client's side: what the node answers.)
type lockedWriter struct {
	w   io.Writer
	tee *bytes.Buffer
	mu  *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.tee.Write(p)
	l.mu.Unlock()
	return l.w.Write(p)
}

// forward copies the client's HTTP request head, then its WebSocket
// frames one by one, recording and perhaps altering data frames.
func (w *wireTap) forward(r *bufio.Reader, s net.Conn) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if _, err := s.Write(line); err != nil {
			return err
		}
		if string(line) == "\r\n" {
			break
		}
	}
	for {
		var hdr [14]byte
		if _, err := io.ReadFull(r, hdr[:2]); err != nil {
			return err
		}
		h := hdr[:2]
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			h = hdr[:4]
		case 127:
			h = hdr[:10]
		}
		if hdr[1]&0x80 != 0 {
			h = hdr[:len(h)+4]
		}
		if _, err := io.ReadFull(r, h[2:]); err != nil {
			return err
		}
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		if op := hdr[0] & 0x0f; (op == 1 || op == 2 || op == 0) && n > 0 {
			plain := bytes.Clone(payload)
			if hdr[1]&0x80 != 0 {
				key := h[len(h)-4:]
				for i := range plain {
					plain[i] ^= key[i%4]
				}
			}
			w.mu.Lock()
			w.sent = append(w.sent, plain)
			if w.flip {
				w.flip = false
				payload[n-1] ^= 1 // the same bit of the unmasked byte
			}
			w.mu.Unlock()
		}
		if _, err := s.Write(h); err != nil {
			return err
		}
		if _, err := s.Write(payload); err != nil {
			return err
		}
	}
}

// contains reports whether text appears in a data frame sent to the node
// or in anything the node answered, and how many data frames were sent.
func (w *wireTap) contains(text []byte) (found bool, frames int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.sent {
		if bytes.Contains(p, text) {
			found = true
		}
	}
	return found || bytes.Contains(w.answered.Bytes(), text), len(w.sent)
}

func (w *wireTap) armFlip() {
	w.mu.Lock()
	w.flip = true
	w.mu.Unlock()
}

// TestFramesOnTheWireAreSealed publishes through a link to the channel's
// owner and checks that the text appears nowhere on the wire, in the
// request nor in the owner's answer (which carries the publication).
func TestFramesOnTheWireAreSealed(t *testing.T) {
	var tap *wireTap
	_, bs := newTestCluster(t, 2, func(i int, cfg *Config) {
		if i == 0 {
			tap = tapNode(t, cfg)
		}
	})
	recs, ch, _ := startOnChannel(t, bs, 1)
	text := []byte(`{"text":"the quick brown fox, in the clear"}`)
	if _, err := bs[1].Publish(t.Context(), ch, text, transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	recs[1].WaitN(t, ch, 1)
	found, frames := tap.contains([]byte("the quick brown fox"))
	if frames == 0 {
		t.Fatal("the tap saw no data frame: the publication did not go through it")
	}
	if found {
		t.Fatal("a message's text travelled in the clear between nodes")
	}
}

// TestAlteredFrameClosesConnection flips one bit of a frame on its way
// to the owner: the owner closes the connection and counts it, the
// altered publication is never stored, and the link reconnects.
func TestAlteredFrameClosesConnection(t *testing.T) {
	var tap *wireTap
	_, bs := newTestCluster(t, 2, func(i int, cfg *Config) {
		if i == 0 {
			tap = tapNode(t, cfg)
		}
	})
	recs, ch, _ := startOnChannel(t, bs, 0, 1)
	tap.armFlip()
	// The bit flipped is the frame's last, here the data's last byte
	// ("hello" -> "helln") if the frame were not sealed.
	_, _ = bs[1].Publish(t.Context(), ch, []byte("hello"), transport.PublishOptions{})
	brokertest.Eventually(t, "the owner counted the altered frame", func() bool {
		return bs[0].Stats().FrameAuthFailures == 1
	})
	if _, err := bs[1].Publish(t.Context(), ch, []byte("after"), transport.PublishOptions{}); err != nil {
		t.Fatalf("publish after the link reconnected: %v", err)
	}
	for _, i := range []int{0, 1} {
		for _, p := range recs[i].WaitN(t, ch, 1) {
			if string(p.Data) != "after" {
				t.Fatalf("n%d got %q: only the publication sent after the altered frame may be stored", i, p.Data)
			}
		}
	}
}

// TestSealOpenAllocsNothing: sealing a batch in the writer's reused
// buffer and opening it in the read buffer allocate nothing, and a frame
// opens only as the next one of its direction.
func TestSealOpenAllocsNothing(t *testing.T) {
	d, err := newFrameCiphers(testKey, "c", "n1", "n2", "0123456789abcdef", "fedcba9876543210", true)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newFrameCiphers(testKey, "c", "n1", "n2", "0123456789abcdef", "fedcba9876543210", false)
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("m"), 4096)
	frame := make([]byte, 0, len(msg)+64)
	allocs := testing.AllocsPerRun(100, func() {
		frame = d.seal.seal(append(frame[:0], msg...))
		out, err := a.open.open(frame)
		if err != nil || !bytes.Equal(out, msg) {
			t.Fatalf("open: %v", err)
		}
		frame = frame[:0]
	})
	if allocs != 0 {
		t.Fatalf("seal and open allocate %v times per frame, want 0", allocs)
	}
	// The acceptor's own direction is keyed apart from the dialler's.
	back := a.seal.seal(append([]byte(nil), msg...))
	if _, err := a.open.open(back); !errors.Is(err, errFrameAuth) {
		t.Fatalf("a frame opened with the other direction's key: %v", err)
	}
	// A replayed frame does not open: its number has passed.
	f1 := d.seal.seal(append([]byte(nil), msg...))
	replay := bytes.Clone(f1)
	if _, err := a.open.open(f1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.open.open(replay); !errors.Is(err, errFrameAuth) {
		t.Fatalf("a replayed frame opened: %v", err)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	d, _ := newFrameCiphers(testKey, "c", "n1", "n2", "0123456789abcdef", "fedcba9876543210", true)
	a, _ := newFrameCiphers(testKey, "c", "n1", "n2", "0123456789abcdef", "fedcba9876543210", false)
	msg := bytes.Repeat([]byte("m"), 16<<10)
	frame := make([]byte, 0, len(msg)+64)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		frame = d.seal.seal(append(frame[:0], msg...))
		if _, err := a.open.open(frame); err != nil {
			b.Fatal(err)
		}
	}
}
