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

// debugServer serves the Go profiler under /debug/pprof/ on a listener
// of its own (--debug-addr), so that profiling a node under load needs
// no rebuild and never shows on the public listener. It leaves out
// pprof's cmdline endpoint: the command line may carry --secret.
type debugServer struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

func startDebug(addr string, log *slog.Logger) (*debugServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: listen debug: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	d := &debugServer{
		ln: ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(d.done)
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug listener failed", "err", err)
		}
	}()
	log.Info("profiler listening", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return d, nil
}

// Addr is the listener's address.
func (d *debugServer) Addr() string { return d.ln.Addr().String() }

// close stops the listener at once: a profile being taken is cut short.
func (d *debugServer) close() error {
	err := d.srv.Close()
	<-d.done
	return err
}
