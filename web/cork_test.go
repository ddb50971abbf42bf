package web

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recConn records each write the socket would get.
type recConn struct {
	net.Conn
	mu        sync.Mutex
	writes    [][]byte
	deadlines int
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recConn) SetWriteDeadline(time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadlines++
	return nil
}

func TestCorkConn(t *testing.T) {
	rec := &recConn{}
	c := newCorkConn(rec, &corkPool{})

	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	c.cork()
	for _, s := range []string{"b", "c", "d"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != 1 {
		t.Fatalf("corked writes reached the socket: %q", rec.writes)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	if err := c.uncork(); err != nil { // nothing collected: no write
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "bcd", "e"}
	if len(rec.writes) != len(want) {
		t.Fatalf("socket writes %q, want %q", rec.writes, want)
	}
	for i, w := range want {
		if string(rec.writes[i]) != w {
			t.Fatalf("socket writes %q, want %q", rec.writes, want)
		}
	}

	d := time.Now().Add(time.Minute)
	for range 3 {
		_ = c.SetWriteDeadline(d)
	}
	_ = c.SetWriteDeadline(d.Add(time.Second))
	if rec.deadlines != 2 {
		t.Fatalf("socket deadline set %d times, want 2 (repeats skipped)", rec.deadlines)
	}
}

// A corked batch larger than corkLimit is written as it fills, so one
// batch never borrows an unbounded buffer.
func TestCorkConnLimit(t *testing.T) {
	rec := &recConn{}
	c := newCorkConn(rec, &corkPool{})
	c.cork()
	chunk := make([]byte, 1000)
	total := 0
	for total < 3*corkLimit {
		_, _ = c.Write(chunk)
		total += len(chunk)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, w := range rec.writes {
		if len(w) > corkLimit+len(chunk) {
			t.Fatalf("one write of %d bytes, limit %d", len(w), corkLimit)
		}
		sum += len(w)
	}
	if sum != total || len(rec.writes) < 3 {
		t.Fatalf("%d bytes in %d writes, want %d bytes in at least 3", sum, len(rec.writes), total)
	}
}

// BenchmarkWriteBatch measures framing a batch of queued frames through
// gorilla into one socket write, over a real loopback connection.
func BenchmarkWriteBatch(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s := &Server{cfg: Config{WriteTimeout: time.Minute}}
			up := websocket.Upgrader{WriteBufferSize: wsWriteBufferSize, WriteBufferPool: &s.wbufs}
			type served struct {
				conn *websocket.Conn
				cork *corkConn
			}
			got := make(chan served, 1)
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cw := &corkingWriter{ResponseWriter: w, pool: &s.corks}
				conn, err := up.Upgrade(cw, r, nil)
				if err != nil {
					return
				}
				got <- served{conn, cw.conn}
			}))
			defer hs.Close()
			client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			go func() {
				for {
					if _, _, err := client.NextReader(); err != nil {
						return
					}
				}
			}()
			sv := <-got
			defer sv.conn.Close()
			frame := bytes.Repeat([]byte("x"), 200)
			batch := make([][]byte, n)
			var renewAt time.Time
			b.ReportAllocs()
			b.SetBytes(int64(n * len(frame)))
			for b.Loop() {
				for i := range batch {
					batch[i] = frame
				}
				if err := s.writeBatch(sv.conn, sv.cork, &renewAt, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// stuckConn blocks every write until release is closed, like a socket
// whose peer stopped reading.
type stuckConn struct {
	recConn
	entered chan struct{} // receives once per write that started
	release chan struct{}
}

func (s *stuckConn) Write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.recConn.Write(p)
}

// A pong (or the answer to a close) written while a batch is blocked on
// the socket must not wait for the batch: the reader that writes it
// would stop reading. It follows the batch, whole, once the socket
// drains.
func TestCorkConnControlNotBehindStuckFlush(t *testing.T) {
	sc := &stuckConn{entered: make(chan struct{}, 16), release: make(chan struct{})}
	c := newCorkConn(sc, &corkPool{})
	c.cork()
	for _, s := range []string{"frame1", "frame2"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	flushed := make(chan error, 1)
	go func() { flushed <- c.uncork() }()
	select {
	case <-sc.entered:
	case <-time.After(waitFor):
		t.Fatal("flush did not reach the socket")
	}

	pong := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("pong"))
		pong <- err
	}()
	select {
	case err := <-pong:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		close(sc.release)
		t.Fatal("pong waited behind the stuck flush")
	}

	close(sc.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	sc.mu.Lock()
	got := make([]string, len(sc.writes))
	for i, w := range sc.writes {
		got[i] = string(w)
	}
	sc.mu.Unlock()
	if strings.Join(got, "|") != "frame1frame2|pong" {
		t.Fatalf("socket writes %q, want the batch, then the pong", got)
	}
}
