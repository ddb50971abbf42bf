package webtest

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// Pause stops reading the socket, as a client that has stopped reading
// does: what the server sends next, pings included, stays in the
// socket's buffers (see DialOptions.ReadBuffer), so that the server sees
// a slow consumer, or a peer that no longer answers pings. Frames read
// before stay queued for Next. It needs a connection that TryDial
// opened (Dial does).
func (c *Conn) Pause() {
	c.tb.Helper()
	if c.sock == nil {
		c.tb.Fatal("Pause: the connection was not opened by TryDial")
	}
	c.sock.pause()
}

// Resume reads the socket again after Pause.
func (c *Conn) Resume() {
	if c.sock != nil {
		c.sock.resume()
	}
}

// pausable is the client's TCP connection. Pausing stops its reads
// below the WebSocket layer, which would otherwise answer pings while a
// read waits for the next frame.
type pausable struct {
	net.Conn

	mu      sync.Mutex
	resumed chan struct{} // nil while reading; closed by resume
	kicks   int           // pauses so far: each ends a read in progress
}

func (p *pausable) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		resumed, kicks := p.resumed, p.kicks
		p.mu.Unlock()
		if resumed != nil {
			<-resumed
		}
		n, err := p.Conn.Read(b)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && p.kicked(kicks) {
			continue // ended by pause, not by a deadline of the caller's
		}
		return n, err
	}
}

func (p *pausable) kicked(since int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kicks != since
}

// pause ends a read in progress with a deadline in the past, and makes
// the next ones wait for resume.
func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		return
	}
	p.resumed = make(chan struct{})
	p.kicks++
	_ = p.Conn.SetReadDeadline(time.Unix(1, 0))
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		return
	}
	_ = p.Conn.SetReadDeadline(time.Time{})
	close(p.resumed)
	p.resumed = nil
}

// Close lets a paused reader go on to find the connection closed.
func (p *pausable) Close() error {
	err := p.Conn.Close()
	p.resume()
	return err
}
