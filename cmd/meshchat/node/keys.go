package node

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
)

// keys are the per-purpose keys derived from the cluster secret. Components
// receive ready keys and never see the secret, so a leaked session key does
// not expose gossip traffic and vice versa.
type keys struct {
	Gossip       []byte // memberlist encryption (AES-256)
	SessionHash  []byte // session cookie HMAC
	SessionBlock []byte // session cookie encryption (AES-256)
	Mesh         []byte // authenticates node-to-node HTTP traffic
	Token        []byte // signs short-lived tokens handed to clients
}

// keySalt is fixed: HKDF's salt only needs to be public and constant, and a
// per-deployment salt would break nodes that share a secret.
const keySalt = "meshchat/v1 key derivation"

// deriveKeys expands the secret into one 32-byte key per purpose with
// HKDF-SHA256, the purpose being the HKDF info label.
func deriveKeys(secret string) (keys, error) {
	if secret == "" {
		return keys{}, errors.New("config: empty secret")
	}
	var k keys
	for _, d := range []struct {
		label string
		dst   *[]byte
	}{
		{"gossip", &k.Gossip},
		{"session-hash", &k.SessionHash},
		{"session-block", &k.SessionBlock},
		{"mesh", &k.Mesh},
		{"token", &k.Token},
	} {
		key, err := hkdf.Key(sha256.New, []byte(secret), []byte(keySalt), d.label, 32)
		if err != nil {
			return keys{}, fmt.Errorf("config: derive %s key: %w", d.label, err)
		}
		*d.dst = key
	}
	return k, nil
}
