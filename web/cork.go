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
	// wsWriteBufferSize is gorilla's write buffer, where it puts a
	// frame's header and the first bytes of its payload. It is small on
	// purpose: the frame goes into the corked connection's pooled batch
	// buffer anyway (the rest of a longer payload is copied there
	// directly). gorilla takes it from the server's writeBufPool for each
	// message and gives it back after, so an idle connection holds none;
	// the price is one 24-byte allocation per message (gorilla boxes the
	// buffer to put it back).
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

// writeBufPool lends gorilla its write buffers (websocket.BufferPool).
type writeBufPool struct{ p sync.Pool }

func (wp *writeBufPool) Get() any  { return wp.p.Get() }
func (wp *writeBufPool) Put(v any) { wp.p.Put(v) }

// corkConn is the hijacked connection under a WebSocket. gorilla writes
// every message with its own write call, one system call per frame;
// between cork and uncork the writes are collected instead, so a batch of
// queued frames leaves in one system call. Outside a batch (control
// frames sent by the reader, the close frame) writes go straight through.
//
// cork and uncork are called only by the connection's writer goroutine;
// Write may be called by gorilla from the reader too (pongs, the close
// answer), always under gorilla's own write lock, so a Write never starts
// inside another goroutine's frame. Bytes reach the socket in the order
// of the Write calls, so frames never interleave.
//
// Nobody holds mu across a socket write. One goroutine at a time owns
// the socket (writing); a Write that finds it owned, or the connection
// corked, appends to buf and returns at once, and the owner writes what
// was appended before it lets go. So a pong or the answer to a close does
// not wait, with the reader stuck, behind a batch blocked on a full
// socket: it follows the batch when the socket drains. uncork waits for
// the socket (writerFree) since its caller wants the batch's outcome.
type corkConn struct {
	net.Conn
	pool *corkPool

	mu         sync.Mutex
	writerFree *sync.Cond // on mu: signalled when writing turns false
	corked     bool
	writing    bool    // a goroutine is writing to Conn
	buf        *[]byte // borrowed from pool while non-empty
	err        error   // sticky: a failed write fails every later one

	// dlMu guards wdl, apart from mu, so that setting a deadline never
	// waits for anything else.
	dlMu sync.Mutex
	wdl  time.Time // write deadline last set on Conn
}

// NetConn returns the connection under the cork (see abortConn).
func (c *corkConn) NetConn() net.Conn { return c.Conn }

func newCorkConn(conn net.Conn, pool *corkPool) *corkConn {
	c := &corkConn{Conn: conn, pool: pool}
	c.writerFree = sync.NewCond(&c.mu)
	return c
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
// to the pool. It waits while another goroutine owns the socket.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	for c.writing {
		c.writerFree.Wait()
	}
	c.drainLocked()
	return c.err
}

// drainLocked takes the socket and writes buf until it stays empty (or,
// corked, until the writer goroutine's uncork takes over), then lets the
// socket go. mu is held on entry and exit, released while writing.
func (c *corkConn) drainLocked() {
	c.writing = true
	for c.buf != nil && c.err == nil {
		b := c.buf
		c.buf = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*b)
		c.pool.put(b)
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
		}
		if c.corked {
			break
		}
	}
	if c.err != nil && c.buf != nil {
		c.pool.put(c.buf)
		c.buf = nil
	}
	c.writing = false
	c.writerFree.Broadcast()
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corked || c.writing {
		if c.buf == nil {
			c.buf = c.pool.get()
		}
		*c.buf = append(*c.buf, p...)
		if c.corked && !c.writing && len(*c.buf) >= corkLimit {
			c.drainLocked()
			if c.err != nil {
				return 0, c.err
			}
		}
		return len(p), nil
	}
	// Straight through: own the socket for this write, then write what
	// others appended meanwhile.
	c.writing = true
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if err != nil && c.err == nil {
		c.err = err
	}
	if !c.corked {
		c.drainLocked()
	} else {
		c.writing = false
		c.writerFree.Broadcast()
	}
	if err != nil {
		return n, err
	}
	return n, nil
}

// corkingWriter hands gorilla's Upgrader a corkConn when it hijacks the
// connection, and a read buffer of wsReadBufferSize that gorilla adopts
// (the Upgrader's ReadBufferSize is 0, and gorilla reuses a hijacked
// reader larger than 256 bytes): the server keeps a hand on it to know
// whether a frame is already buffered before it waits on the socket.
type corkingWriter struct {
	http.ResponseWriter
	pool *corkPool
	conn *corkConn
	br   *bufio.Reader
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newCorkConn(conn, w.pool)
	if brw.Reader.Buffered() > 0 {
		// The client did not wait for the handshake; gorilla refuses
		// that on seeing the buffered bytes.
		return w.conn, brw, nil
	}
	w.br = bufio.NewReaderSize(w.conn, wsReadBufferSize)
	return w.conn, bufio.NewReadWriter(w.br, brw.Writer), nil
}

func (w *corkingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
