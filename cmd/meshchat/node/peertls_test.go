package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPeerTLSConfig: mesh links accept a peer certificate that verifies
// against --tls-ca; without --tls-ca they accept one that does not (the
// frames are sealed with the cluster secret) and warn; with a --tls-ca
// that does not verify it, the dial fails.
func TestPeerTLSConfig(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	own := filepath.Join(dir, "own.pem")
	writePEM(t, own, srv.Certificate().Raw)
	other := filepath.Join(dir, "other.pem")
	writePEM(t, other, selfSigned(t))
	tests := []struct {
		name, ca string
		ok, warn bool
	}{
		{"no ca: accepted, warned", "", true, true},
		{"ca verifies", own, true, false},
		{"ca does not verify", other, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			cfg, err := peerTLSConfig(tt.ca, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			conn, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "https://"), cfg)
			if err == nil {
				conn.Close()
			}
			if tt.ok != (err == nil) {
				t.Fatalf("dial: %v, want ok=%v", err, tt.ok)
			}
			if warned := strings.Contains(logs.String(), "does not verify"); warned != tt.warn {
				t.Fatalf("warned=%v, want %v: %s", warned, tt.warn, logs.String())
			}
		})
	}
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned returns a CA certificate that signed nothing else.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "another CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
