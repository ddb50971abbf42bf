package web

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// Socket buffers. Every connection's memory counts when a node holds tens
// of thousands of idle clients, so nothing is held per connection that
// the connection does not need while it idles.
const (
	// wsReadBufferSize is the WebSocket read buffer. Client frames are
	// small (a send is a few hundred bytes); a larger frame is read
	// through it in pieces.
	wsReadBufferSize = 512
	// wsWriteBufferSize is gorilla's per-connection write buffer, where
	// it puts a frame's header and the first bytes of its payload. It is
	// small on purpose: the frame goes into the corked connection's
	// pooled batch buffer anyway (the rest of a longer payload is copied
	// there directly), so a bigger one only costs memory per connection.
	// gorilla's own WriteBufferPool would avoid even this but allocates
	// on every message.
	wsWriteBufferSize = 256
	// corkLimit is how many bytes a corked connection collects before it
	// writes them anyway: it bounds the memory one batch borrows.
	corkLimit = 64 << 10
)

// corkPool holds the buffers corked connections collect a batch in.
type corkPool struct{ p sync.Pool }

func (cp *corkPool) get() *[]byte {
	if b, ok := cp.p.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 16<<10)
	return &b
}

func (cp *corkPool) put(b *[]byte) {
	if cap(*b) > corkLimit+wsWriteBufferSize {
		return // grown by one huge frame: let it go
	}
	*b = (*b)[:0]
	cp.p.Put(b)
}

// corkConn is the hijacked connection under a WebSocket. gorilla writes
// every message with its own write call, one system call per frame;
// between cork and uncork the writes are collected instead, so a batch of
// queued frames leaves in one system call. Outside a batch (control
// frames sent by the reader, the close frame) writes go straight through.
//
// cork and uncork are called only by the connection's writer goroutine;
// Write may be called by gorilla from the reader too (pongs, the close
// answer), always under gorilla's own write lock, so whole frames never
// interleave. mu orders a pass-through write against a flush.
type corkConn struct {
	net.Conn
	pool *corkPool

	mu     sync.Mutex
	corked bool
	buf    *[]byte // borrowed from pool while corked and non-empty
	err    error   // sticky: a failed flush fails every later write

	// dlMu guards wdl, apart from mu: a flush holds mu while it blocks on
	// a full socket, and the deadline that cuts such a write short (set
	// when the hub drops a slow consumer) must get through meanwhile.
	dlMu sync.Mutex
	wdl  time.Time // write deadline last set on Conn
}

// SetWriteDeadline passes a new deadline on and skips a repeated one:
// gorilla sets the deadline before every frame it writes, and each change
// re-arms a runtime timer.
func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if t.Equal(c.wdl) {
		return nil
	}
	c.wdl = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *corkConn) SetDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.wdl = t
	return c.Conn.SetDeadline(t)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what was collected, in one write, and returns the buffer
// to the pool.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil {
		return c.err
	}
	b := c.buf
	c.buf = nil
	if c.err == nil && len(*b) > 0 {
		_, c.err = c.Conn.Write(*b)
	}
	c.pool.put(b)
	return c.err
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = c.pool.get()
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// corkingWriter hands gorilla's Upgrader a corkConn when it hijacks the
// connection.
type corkingWriter struct {
	http.ResponseWriter
	pool *corkPool
	conn *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: conn, pool: w.pool}
	return w.conn, brw, nil
}

func (w *corkingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
