package node_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// testCert is a self-signed certificate for 127.0.0.1, its own CA.
type testCert struct {
	serial            int64
	certPEM, keyPEM   []byte
	pool              *x509.CertPool
	certFile, keyFile string // where write put it
}

func newTestCert(t *testing.T, serial int64) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "meshchat test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCert{
		serial:  serial,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		pool:    x509.NewCertPool(),
	}
	c.pool.AppendCertsFromPEM(c.certPEM)
	return c
}

// write puts the pair in dir as cert.pem and key.pem, replacing what is
// there.
func (c *testCert) write(t *testing.T, dir string) {
	t.Helper()
	c.certFile, c.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(c.certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *testCert) client() *tls.Config { return &tls.Config{RootCAs: c.pool} }

// servedSerial opens a new TLS connection to addr and returns the serial
// of the certificate it is served.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSCluster runs two nodes that serve HTTPS and WSS with a
// certificate made here, their mesh links verifying it with --tls-ca: a
// message crosses from one to the other, every URL the cluster
// advertises is https://, and the session cookie is Secure.
func TestTLSCluster(t *testing.T) {
	cert := newTestCert(t, 1)
	cert.write(t, t.TempDir())
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Adjust: func(_ int, cfg *node.Config) {
		cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = cert.certFile, cert.keyFile, cert.certFile
	}})
	for _, n := range nodes {
		if !strings.HasPrefix(n.URL(), "https://") {
			t.Fatalf("%s advertises %s, want https://", n.Name(), n.URL())
		}
	}
	var cl struct{ Nodes []struct{ HTTP string } }
	status, body := getTLS(t, cert.client(), nodes[1].URL()+"/api/cluster")
	if err := json.Unmarshal(body, &cl); status != 200 || err != nil || len(cl.Nodes) != 2 {
		t.Fatalf("/api/cluster over https: %d %s", status, body)
	}
	for _, nd := range cl.Nodes {
		if !strings.HasPrefix(nd.HTTP, "https://") {
			t.Fatalf("/api/cluster lists %s, want https://", nd.HTTP)
		}
	}

	alice := webtest.LoginTLS(t, cert.client(), nodes[0].URL(), "alice")
	bob := webtest.LoginTLS(t, cert.client(), nodes[1].URL(), "bob")
	for _, c := range alice.Cookies {
		if !c.Secure {
			t.Fatalf("cookie %s over https is not Secure", c.Name)
		}
	}
	ca := webtest.Dial(t, nodes[0].URL(), alice, webtest.DialOptions{TLS: cert.client()})
	cb := webtest.Dial(t, nodes[1].URL(), bob, webtest.DialOptions{TLS: cert.client()})
	for _, w := range ca.Welcome.Strings("nodes") {
		if !strings.HasPrefix(w, "https://") {
			t.Fatalf("welcome lists %s, want https://", w)
		}
	}
	ca.Join("general")
	cb.Join("general")
	ca.Send(map[string]any{"type": "send", "room": "general", "text": "over tls"})
	cb.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == "over tls" })
}

func getTLS(t *testing.T, cfg *tls.Config, url string) (int, []byte) {
	t.Helper()
	resp, err := webtest.TLSClient(t, nil, cfg).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestTLSCertificateReload replaces the certificate files of a running
// node: a pair that does not load is counted and the old certificate
// stays; a good one is what new connections get.
func TestTLSCertificateReload(t *testing.T) {
	dir := t.TempDir()
	first := newTestCert(t, 101)
	first.write(t, dir)
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.TLSCert, cfg.TLSKey = first.certFile, first.keyFile
	n := nodetest.Start(t, cfg)
	if got := servedSerial(t, n.HTTPAddr()); got != first.serial {
		t.Fatalf("served serial %d, want %d", got, first.serial)
	}

	if err := os.WriteFile(first.certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 20*time.Second, "the bad pair to be refused", func() bool {
		_, body := getTLS(t, first.client(), n.URL()+"/metrics")
		return strings.Contains(string(body), `meshchat_tls_certificate_reloads_total{result="error"} 1`)
	})
	if got := servedSerial(t, n.HTTPAddr()); got != first.serial {
		t.Fatalf("after a bad pair: served serial %d, want the old %d", got, first.serial)
	}

	second := newTestCert(t, 202)
	second.write(t, dir)
	clustertest.WaitFor(t, 20*time.Second, "new connections to get the new certificate", func() bool {
		return servedSerial(t, n.HTTPAddr()) == second.serial
	})
}

// TestClusterNameKeepsClustersApart starts two nodes with the same
// secret and other cluster names, the second joining the first: the
// first turns the join away, and each stays a cluster of one.
func TestClusterNameKeepsClustersApart(t *testing.T) {
	blue := nodetest.Config(t, "blue1", "mesh", "")
	blue.ClusterName = "blue"
	a := nodetest.Start(t, blue)
	green := nodetest.Config(t, "green1", "mesh", "", a.GossipAddr())
	green.ClusterName = "green"
	before := a.Cluster().GossipProblems()
	b := nodetest.Start(t, green)
	clustertest.WaitFor(t, 20*time.Second, "the first node to turn joins away", func() bool {
		return a.Cluster().GossipProblems() >= before+3
	})
	if len(a.Cluster().Members()) != 1 || len(b.Cluster().Members()) != 1 {
		t.Fatalf("clusters with other names merged: %v and %v", a.Cluster().Members(), b.Cluster().Members())
	}
}

// TestPeerTLSConfig: mesh links accept a peer certificate that verifies
// against --tls-ca; without --tls-ca they accept one that does not (the
// frames are sealed with the cluster secret) and warn; with a --tls-ca
// that does not verify it, the dial fails.
func TestPeerTLSConfig(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	own := filepath.Join(t.TempDir(), "own.pem")
	if err := os.WriteFile(own, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	other := newTestCert(t, 7)
	other.write(t, t.TempDir())
	tests := []struct {
		name, ca string
		ok, warn bool
	}{
		{"no ca: accepted, warned", "", true, true},
		{"ca verifies", own, true, false},
		{"ca does not verify", other.certFile, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			cfg, err := node.PeerTLSConfig(tt.ca, slog.New(slog.NewTextHandler(&logs, nil)))
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
