package node

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/web"
)

// A zero Config means every default, each taken from the package that
// owns the value.
func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.HTTPAddr != ":8080" || c.GossipAddr != ":7946" || c.Broker != "mesh" || c.ShutdownTimeout != DefaultShutdownTimeout {
		t.Errorf("node defaults: %+v", c)
	}
	if c.RateLimit != chat.DefaultRateLimit || c.QueueBytes != chat.DefaultQueueBytes ||
		c.History != transport.DefaultHistorySize || c.MaxFrame != web.DefaultMaxFrameBytes {
		t.Errorf("component defaults: %+v", c)
	}
	var zero Config
	if err := zero.Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	if zero.RateLimit != c.RateLimit || zero.History != c.History || zero.MaxFrame != c.MaxFrame {
		t.Errorf("Validate filled %+v, want %+v", zero, c)
	}
	for _, ok := range []Config{{DebugAddr: "localhost:6060"}, {DebugAddr: "[::1]:6060"}, {DebugAddr: ":6060", DebugPublic: true}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("DebugAddr %q (public %v): %v", ok.DebugAddr, ok.DebugPublic, err)
		}
	}
	off := Config{RateLimit: NoRateLimit}
	if err := off.Validate(); err != nil || off.RateLimit >= 0 {
		t.Errorf("NoRateLimit: %v, rate %v", err, off.RateLimit)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"redis without url", Config{Broker: "redis"}, "--broker redis needs --redis"},
		{"negative history", Config{History: -1}, "--history -1"},
		{"tiny frame", Config{MaxFrame: 100}, "--max-frame 100"},
		{"queue below default frame", Config{QueueBytes: 1000}, "--queue-bytes 1000"},
		{"nan rate", Config{RateLimit: math.NaN()}, "--rate-limit"},
		{"bad name", Config{Name: "a b"}, "--name"},
		{"tls cert without key", Config{TLSCert: "c.pem"}, "--tls-cert and --tls-key"},
		{"tls key without cert", Config{TLSKey: "k.pem"}, "--tls-cert and --tls-key"},
		{"tls ca without tls", Config{TLSCA: "ca.pem"}, "--tls-ca needs"},
		{"bad cluster name", Config{ClusterName: "a b"}, "--cluster-name"},
		{"profiler on every interface", Config{DebugAddr: ":6060"}, "--debug-addr"},
		{"profiler on a public address", Config{DebugAddr: "192.0.2.1:6060"}, "--debug-public"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if _, err := New(tt.cfg); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestDeriveKeys(t *testing.T) {
	a, err := deriveKeys("one")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := deriveKeys("one")
	b, _ := deriveKeys("two")
	all := [][]byte{a.Gossip, a.SessionHash, a.SessionBlock, a.Mesh, a.Token}
	for i, k := range all {
		if len(k) != 32 {
			t.Errorf("key %d: %d bytes, want 32", i, len(k))
		}
		for j := range i {
			if bytes.Equal(k, all[j]) {
				t.Errorf("keys %d and %d are equal: purposes must not share keys", i, j)
			}
		}
	}
	if !bytes.Equal(a.Gossip, a2.Gossip) || !bytes.Equal(a.Token, a2.Token) {
		t.Error("derivation is not deterministic: nodes sharing a secret would disagree")
	}
	if bytes.Equal(a.Gossip, b.Gossip) || bytes.Equal(a.SessionHash, b.SessionHash) {
		t.Error("different secrets gave equal keys")
	}
	if _, err := deriveKeys(""); err == nil {
		t.Error("empty secret accepted")
	}
}

func TestDefaultName(t *testing.T) {
	tests := []struct {
		host       string
		http, goss int
		want       string
	}{
		{"web1", 8080, 7946, "web1-8080-7946"},
		{"web1.example.com", 8081, 7947, "web1-8081-7947"},
		{"", 1, 2, "node-1-2"},
		{"we!rd host", 1, 2, "we-rd-host-1-2"},
		{strings.Repeat("x", 100), 65535, 65535, strings.Repeat("x", 64-len("-65535-65535")) + "-65535-65535"},
	}
	for _, tt := range tests {
		got := defaultName(tt.host, tt.http, tt.goss)
		if got != tt.want {
			t.Errorf("defaultName(%q, %d, %d) = %q, want %q", tt.host, tt.http, tt.goss, got, tt.want)
		}
		if !nodeNameRE.MatchString(got) {
			t.Errorf("defaultName(%q) = %q is not a valid --name", tt.host, got)
		}
	}
}

func TestAdvertiseURL(t *testing.T) {
	hostOK := func() (string, error) { return "box", nil }
	resolves := func(addrs ...string) func(string) ([]string, error) {
		return func(string) ([]string, error) { return addrs, nil }
	}
	tests := []struct {
		addr   string
		lookup func(string) ([]string, error)
		want   string
	}{
		{"127.0.0.1:8080", resolves("10.1.2.3"), "http://127.0.0.1:8080"},
		{"192.168.1.5:80", resolves("10.1.2.3"), "http://192.168.1.5:80"},
		{"[::]:8080", resolves("127.0.1.1", "10.1.2.3"), "http://10.1.2.3:8080"},
		{"0.0.0.0:8080", resolves("10.1.2.3"), "http://10.1.2.3:8080"},
		{":8080", resolves("127.0.1.1"), "http://127.0.0.1:8080"},
		{":8080", func(string) ([]string, error) { return nil, errors.New("nxdomain") }, "http://127.0.0.1:8080"},
		{"[::1]:8080", resolves(), "http://[::1]:8080"},
	}
	for _, tt := range tests {
		got, err := advertiseURL(tt.addr, hostOK, tt.lookup)
		if err != nil || got != tt.want {
			t.Errorf("advertiseURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestLoopbackOnlyToOthers(t *testing.T) {
	tests := []struct {
		listen, url string
		want        bool
	}{
		{":8080", "http://127.0.0.1:8080", true},
		{"0.0.0.0:8080", "http://127.0.0.1:8080", true},
		{"[::]:8080", "http://[::1]:8080", true},
		{":8080", "http://10.1.2.3:8080", false},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", false}, // one host by design
		{":8080", "https://chat.example.com", false},
	}
	for _, tt := range tests {
		if got := loopbackOnlyToOthers(tt.listen, tt.url); got != tt.want {
			t.Errorf("loopbackOnlyToOthers(%q, %q) = %v, want %v", tt.listen, tt.url, got, tt.want)
		}
	}
}
