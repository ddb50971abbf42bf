package main

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/web/webtest"
)

// signalWriter collects output and closes seen once it contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	once sync.Once
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestDemo(t *testing.T) {
	_, p, _ := net.SplitHostPort(clustertest.FreeAddr(t, false))
	base, _ := strconv.Atoi(p)
	if base > 60000 {
		base = 20000 // leave room for the gossip ports at base+1000
	}
	out := &signalWriter{want: "Ctrl-C stops all nodes", seen: make(chan struct{})}
	errOut := &clustertest.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, func() {}, []string{"demo", "--nodes", "2", "--base-port", strconv.Itoa(base)}, out, errOut, envMap(nil))
	}()
	select {
	case <-out.seen:
	case code := <-done:
		t.Fatalf("demo exited early with %d: %s %s", code, out.String(), errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("demo did not come up: %s", out.String())
	}
	urls := regexp.MustCompile(`http://127\.0\.0\.1:\d+ `).FindAllString(out.String(), -1)
	if len(urls) != 2 {
		t.Fatalf("demo printed %d node URLs: %s", len(urls), out.String())
	}
	for _, u := range urls {
		v, ok := webtest.GetCluster(t, strings.TrimSpace(u))
		if !ok || len(v.Nodes) != 2 {
			t.Errorf("%s/api/cluster = %+v", u, v)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo exit code %d: %s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop after its context ended")
	}
}
