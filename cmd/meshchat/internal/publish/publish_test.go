package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m) }

var noEnv = Env{
	Apply: func(*flag.FlagSet) error { return nil },
	Name:  func(f string) string { return "MESHCHAT_" + strings.ToUpper(f) },
}

// fakeNode answers POST /api/server/publish with the statuses given, one
// per request (the last repeats), recording the bodies it was sent.
type fakeNode struct {
	mu       sync.Mutex
	statuses []int
	bodies   []map[string]string
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	st := f.statuses[min(len(f.bodies), len(f.statuses))-1]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	if st == http.StatusOK {
		_, _ = w.Write([]byte(`{"id":"7-e"}`))
		return
	}
	_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"retry later"}}`))
}

func start(t *testing.T, statuses ...int) (*fakeNode, string) {
	f := &fakeNode{statuses: statuses}
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	return f, ts.URL
}

func TestTextFromStdin(t *testing.T) {
	f, url := start(t, http.StatusOK)
	var out bytes.Buffer
	args := []string{"--url", url, "--api-key", "k", "--room", "ops", "--from", "cron"}
	if err := Main(context.Background(), args, noEnv, strings.NewReader("disk 91% full\non db-2\n"), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "7-e\n" || f.bodies[0]["text"] != "disk 91% full\non db-2" || f.bodies[0]["room"] != "ops" {
		t.Fatalf("printed %q, sent %v", out.String(), f.bodies)
	}
}

func TestRetriesWithOneRef(t *testing.T) {
	f, url := start(t, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusOK)
	var out bytes.Buffer
	args := []string{"--url", url, "--api-key", "k", "--room", "ops", "--from", "cron", "hello"}
	if err := Main(context.Background(), args, noEnv, nil, &out); err != nil {
		t.Fatal(err)
	}
	if len(f.bodies) != 3 || out.String() != "7-e\n" {
		t.Fatalf("%d attempts, printed %q", len(f.bodies), out.String())
	}
	ref := f.bodies[0]["ref"]
	for _, b := range f.bodies {
		if b["ref"] != ref || ref == "" {
			t.Fatalf("attempts carried refs %v, want one and the same", f.bodies)
		}
	}
}

func TestGivesUpAtTimeout(t *testing.T) {
	_, url := start(t, http.StatusServiceUnavailable)
	args := []string{"--url", url, "--api-key", "k", "--room", "ops", "--from", "cron", "--timeout", "300ms", "hello"}
	err := Main(context.Background(), args, noEnv, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "unavailable") || !strings.Contains(err.Error(), "--timeout") {
		t.Fatalf("err = %v", err)
	}
	if errors.Is(err, ErrUsage) {
		t.Fatal("a refused post is not a usage error")
	}
}

// An attempt the timeout cuts short (the node hangs on the second) still
// gives up with what the node answered before, not a bare deadline.
func TestGivesUpMidAttempt(t *testing.T) {
	var n sync.Mutex
	calls := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Lock()
		calls++
		first := calls == 1
		n.Unlock()
		if !first {
			_, _ = io.Copy(io.Discard, r.Body) // then the server sees the client go
			<-r.Context().Done()               // hangs until the client gives up
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"retry later"}}`))
	}))
	t.Cleanup(ts.Close)
	args := []string{"--url", ts.URL, "--api-key", "k", "--room", "ops", "--from", "cron", "--timeout", "300ms", "hello"}
	err := Main(context.Background(), args, noEnv, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "unavailable") || !strings.Contains(err.Error(), "--timeout") {
		t.Fatalf("err = %v", err)
	}
}

func TestNoRetryOnRefusal(t *testing.T) {
	f, url := start(t, http.StatusBadRequest)
	args := []string{"--url", url, "--api-key", "k", "--room", "ops", "--from", "cron", "hello"}
	if err := Main(context.Background(), args, noEnv, nil, &bytes.Buffer{}); err == nil || len(f.bodies) != 1 {
		t.Fatalf("err = %v after %d attempts, want one failed attempt", err, len(f.bodies))
	}
}
