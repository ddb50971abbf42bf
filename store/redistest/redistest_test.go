package redistest_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/store/redistest"
)

func client(t *testing.T, s *redistest.Server) *goredis.Client {
	t.Helper()
	opt, err := goredis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	c := goredis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name    string
		persist bool
		want    string // value of k after restart; "" = gone
	}{
		{"volatile", false, ""},
		{"persist", true, "v"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s := redistest.StartWith(t, redistest.Options{Persist: tc.persist})
			c := client(t, s)
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			addr := s.Addr()
			s.Stop()
			if s.Running() {
				t.Fatal("running after Stop")
			}
			if err := c.Ping(ctx).Err(); err == nil {
				t.Fatal("PING succeeded while stopped")
			}
			s.Restart()
			if s.Addr() != addr {
				t.Fatalf("restart moved from %s to %s", addr, s.Addr())
			}
			got, err := c.Get(ctx, "k").Result()
			if err != nil && err != goredis.Nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("after restart k = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestURL(t *testing.T) {
	s := redistest.Start(t)
	opt, err := goredis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opt.Addr != s.Addr() || opt.DB != 0 {
		t.Fatalf("URL %s parsed to %s db %d", s.URL(), opt.Addr, opt.DB)
	}
}

func TestReserve(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := redistest.Reserve(t, redistest.Options{})
	c := client(t, s)
	if s.Running() || c.Ping(ctx).Err() == nil {
		t.Fatal("a reserved server answers before it is started")
	}
	s.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
}
