package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// secretFile is where a node without Config.Secret keeps the secret it
// made, in its data directory, so that a restart keeps its sessions.
const secretFile = "secret"

// ownSecret is the secret of a node given none: the one kept in dataDir
// when there is one, else a new random one, kept in dataDir when it is
// set. Such a node is a cluster of one (Validate refuses Join without a
// Secret), so no other node needs to know it.
func ownSecret(dataDir string) (secret string, kept bool, err error) {
	path := filepath.Join(dataDir, secretFile)
	if dataDir != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			if s := strings.TrimSpace(string(b)); s != "" {
				return s, true, nil
			}
			return "", false, fmt.Errorf("node: %s is empty", path)
		case !errors.Is(err, fs.ErrNotExist):
			return "", false, fmt.Errorf("node: read secret: %w", err)
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, fmt.Errorf("node: make a secret: %w", err)
	}
	secret = hex.EncodeToString(raw[:])
	if dataDir == "" {
		return secret, false, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("node: --data: %w", err)
	}
	// O_EXCL: two nodes started on one directory at once must not each
	// keep a different secret.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("node: keep secret: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("node: keep secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("node: keep secret: %w", err)
	}
	return secret, true, nil
}
