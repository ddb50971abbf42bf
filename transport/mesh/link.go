package mesh

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshchat/meshchat/transport"
)

// The link and its loops: dialling and redialling a peer, queueing what
// this node sends it, and noticing what it could not carry (missed
// deliveries are announced to the peer once the link is back, so the peer
// fetches the gap). The requests that ride the link are in client.go.

// link is this node's connection to one peer, dialled lazily when there is
// something to send and redialled with backoff. Everything this node
// originates for the peer (requests, and deliveries of the channels it
// owns) goes through the link's one queue, in order.
type link struct {
	b    *Broker
	peer transport.Peer
	q    *sendQueue

	mu        sync.Mutex
	pending   map[uint64]chan result
	nextID    uint64
	downUntil time.Time
	lastErr   error
	ws        *websocket.Conn
	// missed are channels whose deliveries to the peer were dropped
	// (link down, queue full or reset, connection cut mid-write). The
	// link redials while any are noted and, once connected, sends the
	// peer a notice for each, so it re-registers and fetches the gap
	// from history instead of waiting for the channel's next message.
	missed map[string]struct{}

	stop     chan struct{}
	stopOnce sync.Once
}

// linkTo returns the link to peer, starting it if needed.
func (b *Broker) linkTo(peer transport.Peer) *link {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	if l := b.links[peer.Name]; l != nil && l.peer.Addr == peer.Addr {
		return l
	} else if l != nil {
		l.close() // the peer moved
	}
	l := &link{
		b:       b,
		peer:    peer,
		q:       newSendQueue(b.cfg.QueueBytes),
		pending: make(map[uint64]chan result),
		stop:    make(chan struct{}),
	}
	if b.closed.Load() || !b.goFn(l.run) {
		l.close()
		l.fail(transport.ErrClosed, time.Hour)
	} else {
		b.links[peer.Name] = l
	}
	return l
}

func (l *link) close() {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.q.close()
		l.mu.Lock()
		if l.ws != nil {
			l.ws.Close()
		}
		l.mu.Unlock()
	})
}

// deliverTo queues a delivery of channel ch for node. When the peer cannot
// take it (its queue is full) the connection is cut: the peer notices, and
// re-registers its channels, which returns what it missed. Either way the
// channel is noted as missed, so the peer also gets a notice once the
// link is back.
func (b *Broker) deliverTo(node, ch string, msg []byte) {
	p, ok := b.peerByName(node)
	if !ok {
		return
	}
	l := b.linkTo(p)
	l.mu.Lock()
	down := time.Now().Before(l.downUntil)
	l.mu.Unlock()
	if down {
		l.noteMissed(ch)
		return
	}
	if !l.q.push(msg) {
		l.noteMissed(ch)
		l.mu.Lock()
		if l.ws != nil {
			l.ws.Close()
		}
		l.mu.Unlock()
	}
}

// sendTo queues a one-way message for peer (which need not be in this
// node's view) unless its link is down.
func (b *Broker) sendTo(p transport.Peer, msg []byte) {
	l := b.linkTo(p)
	l.mu.Lock()
	down := time.Now().Before(l.downUntil)
	l.mu.Unlock()
	if !down {
		l.q.push(msg)
	}
}

func (l *link) noteMissed(ch string) {
	l.mu.Lock()
	if l.missed == nil {
		l.missed = make(map[string]struct{})
	}
	l.missed[ch] = struct{}{}
	l.mu.Unlock()
	select {
	case l.q.wake <- struct{}{}: // redial if idle
	default:
	}
}

// lost notes the channels of deliveries among msgs as missed.
func (l *link) lost(msgs [][]byte) {
	for _, m := range msgs {
		d := dec{b: m}
		if d.byte1() == kindDelivery {
			if ch := d.str(); d.err == nil {
				l.noteMissed(ch)
			}
		}
	}
}

// sendNotices queues a notice for every missed channel.
func (l *link) sendNotices() {
	l.mu.Lock()
	missed := l.missed
	l.missed = nil
	l.mu.Unlock()
	for ch := range missed {
		l.q.push(noticeMsg(ch))
	}
}

// fail ends every pending request with err, drops what is queued (a
// request queued behind a failure must not be sent after its caller gave
// up), and refuses new traffic for down.
func (l *link) fail(err error, down time.Duration) {
	l.lost(l.q.reset())
	l.mu.Lock()
	l.lastErr = err
	l.downUntil = time.Now().Add(down)
	pending := l.pending
	l.pending = make(map[uint64]chan result)
	l.mu.Unlock()
	for _, rc := range pending {
		rc <- result{status: stLinkDown, msg: err.Error()}
	}
}

func (l *link) run() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-l.stop:
			l.fail(transport.ErrClosed, time.Hour)
			return
		case <-l.q.wake:
		}
		ws, fc, err := l.dial()
		if err != nil {
			l.b.counts.dialFailures.Add(1)
			l.b.log.Debug("dial peer failed", "peer", l.peer.Name, "err", err, "retry_in", backoff)
			l.fail(err, backoff)
			select {
			case <-l.stop:
				l.fail(transport.ErrClosed, time.Hour)
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			l.mu.Lock()
			retry := len(l.missed) > 0
			l.mu.Unlock()
			if retry {
				select {
				case l.q.wake <- struct{}{}:
				default:
				}
			}
			continue
		}
		backoff = 50 * time.Millisecond
		l.b.counts.connects.Add(1)
		l.mu.Lock()
		l.ws = ws
		stopped := false
		select {
		case <-l.stop:
			stopped = true
		default:
		}
		l.mu.Unlock()
		if stopped {
			ws.Close()
			continue
		}
		l.sendNotices()
		// Wake the writer for what was queued while dialling.
		select {
		case l.q.wake <- struct{}{}:
		default:
		}
		err = l.serve(ws, fc)
		l.mu.Lock()
		l.ws = nil
		l.mu.Unlock()
		if !errors.Is(err, transport.ErrClosed) {
			l.b.counts.drops.Add(1)
		}
		l.b.log.Debug("peer link closed", "peer", l.peer.Name, "err", err)
		l.fail(fmt.Errorf("connection lost: %w", err), 0)
	}
}

// serve runs the connection until it fails or the link stops: a writer
// drains the queue, this goroutine's reader takes responses.
func (l *link) serve(ws *websocket.Conn, fc frameCiphers) error {
	readDone := make(chan error, 1)
	go func() {
		err := readLoop(ws, fc.open, l.handleResponse)
		l.b.readFailed(l.peer.Name, err)
		readDone <- err
	}()
	stop := make(chan struct{})
	writeDone := make(chan error, 1)
	go func() {
		writeDone <- writeLoop(ws, fc.seal, l.q, stop, l.lost)
	}()
	var err error
	select {
	case err = <-readDone:
		close(stop)
		ws.Close()
		<-writeDone
	case err = <-writeDone:
		close(stop)
		ws.Close()
		<-readDone
	case <-l.stop:
		close(stop)
		<-writeDone
		ws.Close()
		<-readDone
		err = transport.ErrClosed
	}
	ws.Close()
	return err
}
