package mesh

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Frames on a connection, for both directions: the bounded queue of
// encoded messages, the writer that batches them into WebSocket frames,
// and the reader that splits frames back into messages.

// Connection tuning.
const (
	pingInterval   = 10 * time.Second
	readTimeout    = 3 * pingInterval // a silent peer is dropped after this
	writeTimeout   = 10 * time.Second
	maxFrameBatch  = 256 << 10 // a flush writes frames of about this size
	maxMessageSize = 64 << 20
)

// sendQueue is a connection's bounded outbound queue of encoded messages.
type sendQueue struct {
	mu     sync.Mutex
	msgs   [][]byte
	spare  [][]byte
	size   int
	max    int
	closed bool
	wake   chan struct{}
}

func newSendQueue(max int) *sendQueue {
	return &sendQueue{max: max, wake: make(chan struct{}, 1)}
}

// push queues m; false when the queue is full or closed.
func (q *sendQueue) push(m []byte) bool {
	q.mu.Lock()
	if q.closed || q.size+len(m) > q.max && len(q.msgs) > 0 {
		q.mu.Unlock()
		return false
	}
	q.msgs = append(q.msgs, m)
	q.size += len(m)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take swaps out everything queued; the writer hands the slice back with
// recycle so steady traffic does not allocate a new one per flush.
func (q *sendQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.msgs
	q.msgs, q.spare = q.spare[:0], nil
	q.size = 0
	return m
}

func (q *sendQueue) recycle(m [][]byte) {
	clear(m)
	q.mu.Lock()
	if q.spare == nil {
		q.spare = m[:0]
	}
	q.mu.Unlock()
}

// reset drops what is queued and returns it.
func (q *sendQueue) reset() [][]byte {
	q.mu.Lock()
	m := q.msgs
	q.msgs, q.size = nil, 0
	q.mu.Unlock()
	return m
}

func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.msgs, q.size = nil, 0
	q.mu.Unlock()
}

// writeLoop drains q into ws until stop closes or a write fails; one flush
// writes everything queued as few frames, each sealed whole by s. When a
// write fails, lost (if set) is given the batch that was being written:
// some of it may never have reached the peer.
func writeLoop(ws *websocket.Conn, s *sealer, q *sendQueue, stop <-chan struct{}, lost func([][]byte)) (err error) {
	var msgs [][]byte
	defer func() {
		if err != nil && lost != nil && len(msgs) > 0 {
			lost(msgs)
		}
	}()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	var frame []byte // reused: steady traffic does not allocate per flush
	for {
		select {
		case <-stop:
			return nil
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				return err
			}
			continue
		case <-q.wake:
		}
		msgs = q.take()
		if len(msgs) == 0 {
			continue
		}
		_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		for i, m := range msgs {
			frame = binary.AppendUvarint(frame, uint64(len(m)))
			frame = append(frame, m...)
			if len(frame) < maxFrameBatch && i < len(msgs)-1 {
				continue
			}
			frame = s.seal(frame)
			if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				return err
			}
			frame = frame[:0]
		}
		if cap(frame) > 4*maxFrameBatch {
			frame = nil // a large snapshot went by: do not keep its buffer
		}
		q.recycle(msgs)
		msgs = nil
	}
}

// readLoop reads frames, opens each with o and hands each message in them
// to handle. A frame that fails to open ends it with errFrameAuth.
func readLoop(ws *websocket.Conn, o *opener, handle func([]byte)) error {
	ws.SetReadLimit(maxMessageSize)
	extend := func(string) error { return ws.SetReadDeadline(time.Now().Add(readTimeout)) }
	_ = extend("")
	ws.SetPongHandler(extend)
	ws.SetPingHandler(func(data string) error {
		_ = extend("")
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if data, err = o.open(data); err != nil {
			return err
		}
		_ = extend("")
		for len(data) > 0 {
			n, k := binary.Uvarint(data)
			if k <= 0 || n > uint64(len(data)-k) {
				return errBadFrame
			}
			handle(data[k : k+int(n)])
			data = data[k+int(n):]
		}
	}
}
