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
// addressee (authenticate), and answers with a nonce of its own and a
// proof over both nonces, which the dialler checks (dial). Every MAC
// covers the cluster name, so nodes of two clusters that share a secret
// never link. Both ends then derive the connection's frame keys from the
// two nonces (seal.go): everything after the handshake is encrypted and
// authenticated.

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
	// hdrAccept carries the accepting node's nonce, in its answer.
	hdrAccept = "X-Mesh-Accept-Nonce"
)

// mac signs parts with the mesh key, under this version's label and the
// cluster name. Version 1 (plaintext frames) used another label, so a
// node of that version and one of this never link.
func (b *Broker) mac(parts ...string) string {
	m := hmac.New(sha256.New, b.cfg.Key)
	m.Write([]byte("meshchat-mesh-v2"))
	m.Write([]byte{0})
	m.Write([]byte(b.cfg.ClusterName))
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

func newNonce() string {
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	return hex.EncodeToString(nb[:])
}

// authenticate checks a dialling peer's handshake and returns its name,
// the headers this node answers with (its nonce and proof) and the
// connection's frame ciphers.
func (b *Broker) authenticate(h http.Header) (peer string, answer http.Header, fc frameCiphers, err error) {
	from, to, ts, nonce, sig := h.Get(hdrFrom), h.Get(hdrTo), h.Get(hdrTime), h.Get(hdrNonce), h.Get(hdrSig)
	if from == "" || to != b.cfg.Self.Name || len(nonce) < 16 || sig == "" {
		return "", nil, fc, fmt.Errorf("%w: missing or misaddressed handshake", ErrAuth)
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	now := time.Now().UnixMilli()
	if err != nil || now-t > maxClockSkew.Milliseconds() || t-now > maxClockSkew.Milliseconds() {
		return "", nil, fc, fmt.Errorf("%w: stale or bad timestamp", ErrAuth)
	}
	if !hmac.Equal([]byte(sig), []byte(b.mac("dial", from, to, ts, nonce))) {
		return "", nil, fc, fmt.Errorf("%w: bad signature from %q (another secret or cluster name)", ErrAuth, from)
	}
	if !b.nonces.fresh(nonce, now) {
		return "", nil, fc, fmt.Errorf("%w: replayed nonce", ErrAuth)
	}
	accept := newNonce()
	if fc, err = newFrameCiphers(b.cfg.Key, b.cfg.ClusterName, from, to, nonce, accept, false); err != nil {
		return "", nil, fc, err
	}
	answer = http.Header{
		hdrAccept: {accept},
		hdrProof:  {b.mac("proof", to, from, nonce, accept)},
	}
	return from, answer, fc, nil
}

// dial opens a connection to the link's peer: it signs the handshake,
// checks the peer's proof that it holds the key too, and derives the
// connection's frame ciphers.
func (l *link) dial() (*websocket.Conn, frameCiphers, error) {
	u := strings.TrimSuffix(l.peer.Addr, "/") + MountPath + "ws"
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	nonce := newNonce()
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	self := l.b.cfg.Self.Name
	h := http.Header{
		hdrFrom:  {self},
		hdrTo:    {l.peer.Name},
		hdrTime:  {ts},
		hdrNonce: {nonce},
		hdrSig:   {l.b.mac("dial", self, l.peer.Name, ts, nonce)},
	}
	d := websocket.Dialer{
		HandshakeTimeout: l.b.cfg.DialTimeout,
		ReadBufferSize:   32 << 10,
		WriteBufferSize:  32 << 10,
		TLSClientConfig:  l.b.cfg.TLS,
	}
	ctx, cancel := context.WithTimeout(l.b.ctx, l.b.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			return nil, frameCiphers{}, fmt.Errorf("dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return nil, frameCiphers{}, fmt.Errorf("dial %s: %w", u, err)
	}
	accept := resp.Header.Get(hdrAccept)
	want := l.b.mac("proof", l.peer.Name, self, nonce, accept)
	if len(accept) < 16 || !hmac.Equal([]byte(resp.Header.Get(hdrProof)), []byte(want)) {
		ws.Close()
		return nil, frameCiphers{}, fmt.Errorf("%w: %s did not prove the key", ErrAuth, l.peer.Name)
	}
	fc, err := newFrameCiphers(l.b.cfg.Key, l.b.cfg.ClusterName, self, l.peer.Name, nonce, accept, true)
	if err != nil {
		ws.Close()
		return nil, frameCiphers{}, err
	}
	return ws, fc, nil
}
