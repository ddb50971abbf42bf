package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLS on the HTTP listener (--tls-cert, --tls-key): the certificate is
// read at start and again whenever either file changes, so a renewed
// certificate is served to new connections without a restart. Mesh links
// to peers then dial https (peerTLSConfig).

// certReloadInterval is how often the certificate files are checked for
// a change.
const certReloadInterval = 2 * time.Second

// certReloader serves the current certificate pair and replaces it when
// the files change. A pair that fails to load keeps the old one in use.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cur          atomic.Pointer[tls.Certificate]
	seen         [2]fileStamp // of certFile and keyFile, at the last load
	loaded, fail atomic.Uint64

	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// fileStamp is what tells a changed file: its modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// newCertReloader loads the pair; an error names the flag at fault.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("node: --tls-cert/--tls-key: %w", err)
	}
	return r, nil
}

// load reads both files and, when they make a valid pair, serves it.
func (r *certReloader) load() error {
	var st [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		s, err := stampOf(f)
		if err != nil {
			return err
		}
		st[i] = s
	}
	// Stamped before reading: a write that lands while reading changes
	// the stamp again, so the next check loads once more.
	r.seen = st
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cur.Store(&pair)
	return nil
}

// changed reports whether either file's stamp differs from the last load.
func (r *certReloader) changed() bool {
	for i, f := range []string{r.certFile, r.keyFile} {
		s, err := stampOf(f)
		if err != nil || s != r.seen[i] {
			return err == nil // a file missing for a moment (being replaced) is checked again
		}
	}
	return false
}

// run checks the files every certReloadInterval until close.
func (r *certReloader) run() {
	defer close(r.done)
	t := time.NewTicker(certReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if !r.changed() {
			continue
		}
		if err := r.load(); err != nil {
			r.fail.Add(1)
			r.log.Warn("TLS certificate files changed but do not load: still serving the previous certificate", "cert", r.certFile, "key", r.keyFile, "err", err)
			continue
		}
		r.loaded.Add(1)
		r.log.Info("TLS certificate reloaded", "cert", r.certFile, "expires", r.cur.Load().Leaf.NotAfter)
	}
}

func (r *certReloader) close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// serverConfig is the listener's TLS configuration. HTTP/1.1 only: a
// WebSocket upgrade needs it, and clients then open every connection
// the same way.
func (r *certReloader) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cur.Load(), nil
		},
	}
}

// peerTLSConfig is how mesh links verify the certificates of peers they
// dial over https: against the system roots and, with caFile, the CAs in
// it. With caFile, a certificate that does not verify fails the dial.
// Without one, such a certificate (a self-signed one per node) is
// accepted and warned about once per peer address: every frame on a
// link is sealed with keys only holders of the cluster secret derive,
// and the handshake proves the peer holds it, so an unverified TLS layer
// exposes no more than the plain HTTP a cluster without TLS uses.
func peerTLSConfig(caFile string, log *slog.Logger) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	strict := caFile != ""
	if strict {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("node: --tls-ca: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node: --tls-ca %s: no PEM certificate in the file", caFile)
		}
	}
	var warned sync.Map // peer address -> struct{}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below, where an unverified peer may still be accepted.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verifyPeer(cs, roots)
			if err == nil || strict {
				return err
			}
			if _, dup := warned.LoadOrStore(cs.ServerName, struct{}{}); !dup {
				log.Warn("peer's TLS certificate does not verify; accepted, as mesh frames are sealed with the cluster secret (give --tls-ca to require verification)", "peer", cs.ServerName, "err", err)
			}
			return nil
		},
	}, nil
}

// verifyPeer does what crypto/tls does when InsecureSkipVerify is off.
func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}
