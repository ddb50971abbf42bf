package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/crypto/argon2"
)

// PasswordParams are the argon2id costs of new password hashes. Hashes
// carry their own parameters, so changing them affects new passwords
// only.
type PasswordParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultPasswordParams are OWASP's argon2id recommendation: 19 MiB, two
// passes, one thread (about 50 ms of one core).
var DefaultPasswordParams = PasswordParams{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

// TestPasswordParams cost almost nothing. They are for tests that create
// many accounts, never for a deployment.
var TestPasswordParams = PasswordParams{Time: 1, MemoryKiB: 64, Threads: 1}

const (
	saltBytes = 16
	keyBytes  = 32
	// MinPasswordLength is the shortest password an account may have.
	MinPasswordLength = 8
	// MaxPasswordBytes bounds a password, so that hashing one costs what
	// the parameters say and nothing more.
	MaxPasswordBytes = 1024
)

// hasher hashes and checks passwords, at most as many at a time as the
// machine has cores, so that a burst of logins queues instead of taking
// MemoryKiB each at once.
type hasher struct {
	params PasswordParams
	sem    chan struct{}
	dummy  string // a hash of nothing: checked for unknown names
}

func newHasher(p PasswordParams) *hasher {
	if p == (PasswordParams{}) {
		p = DefaultPasswordParams
	}
	h := &hasher{params: p, sem: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))}
	h.dummy = h.encode(make([]byte, saltBytes), "")
	return h
}

// checkPassword reports why password is not acceptable for a new account
// or a change, or nil.
func checkPassword(password string) error {
	switch {
	case len([]rune(password)) < MinPasswordLength:
		return ErrWeakPassword
	case len(password) > MaxPasswordBytes:
		return ErrPasswordTooLong
	}
	return nil
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hasher) release() { <-h.sem }

// hash returns the PHC string of password under a fresh salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("store: random salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return h.encode(salt, password), nil
}

func (h *hasher) encode(salt []byte, password string) string {
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyBytes)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// verify reports whether password matches encoded, a PHC string. An
// empty or malformed encoded is checked against the dummy hash, so that
// the answer takes as long as for a real account, and is false.
func (h *hasher) verify(ctx context.Context, encoded, password string) (bool, error) {
	p, salt, key, ok := decodeHash(encoded)
	if !ok {
		p, salt, key, _ = decodeHash(h.dummy)
	}
	if len(password) > MaxPasswordBytes {
		password = ""
		ok = false
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	h.release()
	return subtle.ConstantTimeCompare(got, key) == 1 && ok, nil
}

// decodeHash parses "$argon2id$v=19$m=M,t=T,p=P$salt$key". It refuses
// parameters far beyond any this package writes, so that a bad record
// cannot make a login cost gigabytes.
func decodeHash(s string) (p PasswordParams, salt, key []byte, ok bool) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return p, nil, nil, false
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, false
	}
	if p.Time == 0 || p.Time > 16 || p.MemoryKiB < 8 || p.MemoryKiB > 1<<20 || p.Threads == 0 {
		return p, nil, nil, false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return p, nil, nil, false
	}
	return p, salt, key, true
}
