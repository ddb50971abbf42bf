package web

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// JWTKey verifies the tokens of --auth jwt: an HMAC secret for HS256, or
// a public key for RS256 (RSA) or ES256 (ECDSA P-256). A token's header
// must name the algorithm the key is for.
type JWTKey struct {
	HMAC   []byte
	Public crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
}

// jwtSkew is the clock difference allowed between the app that signs
// tokens and the node: a token is accepted up to this long after its
// exp, and this long before its nbf or iat.
const jwtSkew = 30 * time.Second

// maxJWTBytes bounds a token.
const maxJWTBytes = 8 << 10

// ParseJWTKey reads --jwt-key: a PEM public key (the value itself, or
// the name of a file holding it) for RS256 or ES256, anything else is
// the HMAC secret for HS256.
func ParseJWTKey(v string) (JWTKey, error) {
	if v == "" {
		return JWTKey{}, errors.New("web: empty JWT key")
	}
	pemData := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "-----BEGIN") {
		if b, err := os.ReadFile(v); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "-----BEGIN") {
			pemData = b
		} else {
			return JWTKey{HMAC: []byte(v)}, nil
		}
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		return JWTKey{}, errors.New("web: JWT key: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return JWTKey{}, fmt.Errorf("web: JWT key: %w", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return JWTKey{Public: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return JWTKey{}, errors.New("web: JWT key: ECDSA keys must be P-256 (ES256)")
		}
		return JWTKey{Public: k}, nil
	}
	return JWTKey{}, fmt.Errorf("web: JWT key: unsupported key type %T", pub)
}

// jwtClaims are the claims meshchat reads.
type jwtClaims struct {
	Sub  string `json:"sub"`
	Name string `json:"name"`
	Exp  *int64 `json:"exp"`
	Nbf  *int64 `json:"nbf"`
	Iat  *int64 `json:"iat"`
}

// verifyJWT checks a compact JWS token's signature under key and its
// times against now, and returns its claims. exp is required.
func verifyJWT(token string, key JWTKey, now time.Time) (jwtClaims, error) {
	var c jwtClaims
	if len(token) > maxJWTBytes {
		return c, errors.New("token too large")
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return c, errors.New("not a JWT")
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(h64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	pb, err3 := base64.RawURLEncoding.DecodeString(p64)
	if err1 != nil || err2 != nil || err3 != nil {
		return c, errors.New("bad base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return c, errors.New("bad header")
	}
	signed := []byte(token[:len(h64)+1+len(p64)])
	if err := verifySignature(hdr.Alg, signed, sig, key); err != nil {
		return c, err
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return c, errors.New("bad claims")
	}
	switch {
	case c.Exp == nil:
		return c, errors.New("no exp claim")
	case now.After(time.Unix(*c.Exp, 0).Add(jwtSkew)):
		return c, errors.New("token expired")
	case c.Nbf != nil && now.Add(jwtSkew).Before(time.Unix(*c.Nbf, 0)):
		return c, errors.New("token not valid yet")
	case c.Iat != nil && now.Add(jwtSkew).Before(time.Unix(*c.Iat, 0)):
		return c, errors.New("token issued in the future")
	}
	return c, nil
}

// verifySignature checks sig over signed for alg; the key decides which
// algorithm is acceptable, never the token ("none" and algorithm
// confusion are refused).
func verifySignature(alg string, signed, sig []byte, key JWTKey) error {
	digest := sha256.Sum256(signed)
	switch k := key.Public.(type) {
	case nil:
		if alg != "HS256" || len(key.HMAC) == 0 {
			return errors.New("algorithm not accepted")
		}
		mac := hmac.New(sha256.New, key.HMAC)
		mac.Write(signed)
		if !hmac.Equal(sig, mac.Sum(nil)) {
			return errors.New("bad signature")
		}
	case *rsa.PublicKey:
		if alg != "RS256" {
			return errors.New("algorithm not accepted")
		}
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) != nil {
			return errors.New("bad signature")
		}
	case *ecdsa.PublicKey:
		if alg != "ES256" || len(sig) != 64 {
			return errors.New("algorithm not accepted")
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k, digest[:], r, s) {
			return errors.New("bad signature")
		}
	default:
		return errors.New("algorithm not accepted")
	}
	return nil
}
