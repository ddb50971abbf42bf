package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The handshake that opens every node-to-node connection, both ends of
// it: the dialler signs (from, to, time, nonce) with the mesh key, the
// accepting node checks the signature, the clock skew, the nonce and the
// addressee (authenticate), and answers with its own proof over the
// nonce, which the dialler checks (dial). Nothing after the handshake is
// signed.

// maxClockSkew bounds how far a handshake's timestamp may be from this
// node's clock, either way.
const maxClockSkew = 30 * time.Second

// Handshake headers.
const (
	hdrFrom  = "X-Mesh-From"
	hdrTo    = "X-Mesh-To"
	hdrTime  = "X-Mesh-Time"
	hdrNonce = "X-Mesh-Nonce"
	hdrSig   = "X-Mesh-Sig"
	hdrProof = "X-Mesh-Proof"
)

func (b *Broker) mac(parts ...string) string {
	m := hmac.New(sha256.New, b.cfg.Key)
	m.Write([]byte("meshchat-mesh-v1"))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// nonceCache remembers handshake nonces for twice the allowed clock skew,
// so a captured handshake cannot be replayed.
type nonceCache struct {
	mu   sync.Mutex
	seen map[string]int64 // nonce -> expiry (Unix ms)
}

func (c *nonceCache) fresh(nonce string, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) > 4096 {
		for n, exp := range c.seen {
			if exp < now {
				delete(c.seen, n)
			}
		}
	}
	if exp, ok := c.seen[nonce]; ok && exp >= now {
		return false
	}
	c.seen[nonce] = now + 2*maxClockSkew.Milliseconds()
	return true
}

// authenticate checks a dialling peer's handshake and returns its name
// and the proof this node answers with.
func (b *Broker) authenticate(h http.Header) (peer, proof string, err error) {
	from, to, ts, nonce, sig := h.Get(hdrFrom), h.Get(hdrTo), h.Get(hdrTime), h.Get(hdrNonce), h.Get(hdrSig)
	if from == "" || to != b.cfg.Self.Name || len(nonce) < 16 || sig == "" {
		return "", "", fmt.Errorf("%w: missing or misaddressed handshake", ErrAuth)
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	now := time.Now().UnixMilli()
	if err != nil || now-t > maxClockSkew.Milliseconds() || t-now > maxClockSkew.Milliseconds() {
		return "", "", fmt.Errorf("%w: stale or bad timestamp", ErrAuth)
	}
	if !hmac.Equal([]byte(sig), []byte(b.mac("dial", from, to, ts, nonce))) {
		return "", "", fmt.Errorf("%w: bad signature from %q", ErrAuth, from)
	}
	if !b.nonces.fresh(nonce, now) {
		return "", "", fmt.Errorf("%w: replayed nonce", ErrAuth)
	}
	return from, b.mac("proof", to, from, nonce), nil
}

// dial opens a connection to the link's peer: it signs the handshake and
// checks the peer's proof that it holds the key too.
func (l *link) dial() (*websocket.Conn, error) {
	u := strings.TrimSuffix(l.peer.Addr, "/") + MountPath + "ws"
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	self := l.b.cfg.Self.Name
	h := http.Header{
		hdrFrom:  {self},
		hdrTo:    {l.peer.Name},
		hdrTime:  {ts},
		hdrNonce: {nonce},
		hdrSig:   {l.b.mac("dial", self, l.peer.Name, ts, nonce)},
	}
	d := websocket.Dialer{HandshakeTimeout: l.b.cfg.DialTimeout, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
	ctx, cancel := context.WithTimeout(l.b.ctx, l.b.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	want := l.b.mac("proof", l.peer.Name, self, nonce)
	if !hmac.Equal([]byte(resp.Header.Get(hdrProof)), []byte(want)) {
		ws.Close()
		return nil, fmt.Errorf("%w: %s did not prove the key", ErrAuth, l.peer.Name)
	}
	return ws, nil
}
