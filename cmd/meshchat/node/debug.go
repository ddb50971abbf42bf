package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startDebug serves the Go profiler under /debug/pprof/ on a listener of
// its own (--debug-addr), so that profiling a node under load needs no
// rebuild and never shows on the public listener. It leaves out pprof's
// cmdline endpoint: the command line may carry --secret.
func startDebug(addr string, log *slog.Logger) (*sideServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	d, err := startSide("debug", addr, mux, log)
	if err != nil {
		return nil, err
	}
	log.Info("profiler listening", "addr", "http://"+d.Addr()+"/debug/pprof/")
	return d, nil
}

// sideServer is an HTTP listener apart from the public one, for operators
// only: the profiler (--debug-addr) and the metrics (--metrics-addr).
type sideServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// startSide listens on addr and serves h there; kind names the listener
// in errors and logs.
func startSide(kind, addr string, h http.Handler, log *slog.Logger) (*sideServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: listen %s: %w", kind, err)
	}
	d := &sideServer{
		ln: ln,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn(kind+" listener failed", "err", err)
		}
	}()
	return d, nil
}

// Addr is the listener's address.
func (d *sideServer) Addr() string { return d.ln.Addr().String() }

// close stops the listener at once: a request being served (a profile
// being taken) is cut short.
func (d *sideServer) close() error {
	err := d.srv.Close()
	<-d.done
	return err
}
