package mesh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Encryption of a connection's frames. Every WebSocket data frame on a
// mesh connection, whole batches as the writer builds them, is sealed
// with AES-256-GCM, in both directions and whether or not the listener
// serves TLS. Each direction has its own key, derived with HKDF-SHA256
// from the mesh key, both ends' handshake nonces and what the handshake
// signs (cluster name, dialler, acceptor), so no two connections share a
// key even across restarts. The GCM nonce is the frame's number on the
// connection (a counter from zero): WebSocket delivers frames in order,
// so it is never sent, a reordered, replayed, dropped or altered frame
// fails to open, and the connection is closed.

// frameKeyInfo labels the HKDF expansion of a connection's keys.
const frameKeyInfo = "meshchat-mesh-v2 frame keys"

// sealer encrypts the frames of one direction; only the writer uses it.
type sealer struct {
	aead  cipher.AEAD
	n     uint64
	nonce [12]byte
}

// opener decrypts the frames of one direction; only the reader uses it.
type opener struct {
	aead  cipher.AEAD
	n     uint64
	nonce [12]byte
}

// frameCiphers are a connection's two directions, as one end sees them.
type frameCiphers struct {
	seal *sealer
	open *opener
}

// newFrameCiphers derives the keys of the connection whose handshake
// carried dialNonce and acceptNonce, between dialler from and acceptor
// to. dialler says which end this is: the dialler seals with the first
// key, the acceptor with the second.
func newFrameCiphers(key []byte, cluster, from, to, dialNonce, acceptNonce string, dialler bool) (frameCiphers, error) {
	info := frameKeyInfo + "\x00" + cluster + "\x00" + from + "\x00" + to
	km, err := hkdf.Key(sha256.New, key, []byte(dialNonce+"\x00"+acceptNonce), info, 64)
	if err != nil {
		return frameCiphers{}, fmt.Errorf("mesh: derive frame keys: %w", err)
	}
	out, in := km[:32], km[32:]
	if !dialler {
		out, in = in, out
	}
	s, err := newGCM(out)
	if err != nil {
		return frameCiphers{}, err
	}
	o, err := newGCM(in)
	if err != nil {
		return frameCiphers{}, err
	}
	return frameCiphers{seal: &sealer{aead: s}, open: &opener{aead: o}}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("mesh: frame cipher: %w", err)
	}
	return cipher.NewGCM(blk)
}

// seal encrypts the frame p in place (its capacity grows by the tag when
// it must) and returns the sealed frame.
func (s *sealer) seal(p []byte) []byte {
	binary.BigEndian.PutUint64(s.nonce[4:], s.n)
	s.n++
	return s.aead.Seal(p[:0], s.nonce[:], p, nil)
}

// open decrypts the next frame in place; errFrameAuth when it does not
// authenticate as the next frame of this direction.
func (o *opener) open(p []byte) ([]byte, error) {
	binary.BigEndian.PutUint64(o.nonce[4:], o.n)
	out, err := o.aead.Open(p[:0], o.nonce[:], p, nil)
	if err != nil {
		return nil, errFrameAuth
	}
	o.n++
	return out, nil
}

// readFailed counts and logs a connection to or from peer whose reader
// ended with a frame that failed to open; other errors are left to the
// caller.
func (b *Broker) readFailed(peer string, err error) {
	if !errors.Is(err, errFrameAuth) {
		return
	}
	b.counts.frameAuth.Add(1)
	if dropped, ok := b.junkLog.Allow(time.Now()); ok {
		b.log.Warn("closed a peer connection: a frame failed authentication", "peer", peer, "not_logged_since", dropped)
	}
}
