package main

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParseServe(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c serveConfig)
		wantErr string // substring; empty means success
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c serveConfig) {
				want := defaultServeConfig()
				if c.HTTPAddr != ":8080" || c.GossipAddr != ":7946" || c.Broker != "mesh" || c.APIKey != "" ||
					c.RateLimit != 50 || c.History != 1000 || c.MaxFrame != 16384 ||
					c.QueueBytes != want.QueueBytes || c.LogLevel != slog.LevelInfo || c.LogFormat != "text" ||
					c.Name != "" || c.Secret != "" || c.RedisURL != "" || len(c.Join) != 0 || c.HistoryAge != 0 {
					t.Errorf("defaults: got %+v", c)
				}
			},
		},
		{
			name: "env is read",
			env: map[string]string{
				"MESHCHAT_HTTP": "127.0.0.1:9000", "MESHCHAT_GOSSIP": "127.0.0.1:9001",
				"MESHCHAT_JOIN": "10.0.0.1:7946, 10.0.0.2:7946", "MESHCHAT_NAME": "n1",
				"MESHCHAT_SECRET": "s3cret", "MESHCHAT_RATE_LIMIT": "0", "MESHCHAT_HISTORY": "50",
				"MESHCHAT_HISTORY_AGE": "72h", "MESHCHAT_MAX_FRAME": "32KiB", "MESHCHAT_QUEUE_BYTES": "2MiB",
				"MESHCHAT_ORIGINS": "https://chat.example.com/", "MESHCHAT_ADVERTISE_HTTP": "http://10.0.0.1:9000",
				"MESHCHAT_DATA": "/var/lib/meshchat", "MESHCHAT_LOG_LEVEL": "debug", "MESHCHAT_LOG_FORMAT": "json",
				"MESHCHAT_DEBUG_ADDR": "127.0.0.1:6060", "MESHCHAT_METRICS_ADDR": ":9100", "MESHCHAT_API_KEY": "k-0123456789abcdef",
				"MESHCHAT_AUTH": "open", "MESHCHAT_ADMINS": "root,ops", "MESHCHAT_LOGIN_LIMIT": "100", "MESHCHAT_REGISTER_LIMIT": "4",
				"MESHCHAT_HISTORY_BUDGET": "512MiB", "MESHCHAT_ROOM_LIMIT": "0",
			},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "127.0.0.1:9000" || c.GossipAddr != "127.0.0.1:9001" || c.Name != "n1" ||
					c.Secret != "s3cret" || c.RateFlag != 0 || c.RateLimit != node.NoRateLimit || c.History != 50 || c.HistoryAge != 72*time.Hour ||
					c.MaxFrame != 32<<10 || c.QueueBytes != 2<<20 || c.AdvertiseHTTP != "http://10.0.0.1:9000" ||
					c.DataDir != "/var/lib/meshchat" || c.LogLevel != slog.LevelDebug || c.LogFormat != "json" ||
					c.DebugAddr != "127.0.0.1:6060" || c.MetricsAddr != ":9100" || c.APIKey != "k-0123456789abcdef" ||
					c.Auth != "open" || !slices.Equal(c.Admins, []string{"root", "ops"}) ||
					c.AuthLimits.AttemptsPerMinute != 100 || c.AuthLimits.AttemptBurst != 100 ||
					c.AuthLimits.RegistrationsPerMinute != 4 || c.AuthLimits.RegistrationBurst != 20 ||
					c.HistoryBudget != 512<<20 || c.RoomsPerHour != node.NoRateLimit {
					t.Errorf("got %+v", c)
				}
				if !slices.Equal(c.Join, []string{"10.0.0.1:7946", "10.0.0.2:7946"}) {
					t.Errorf("join = %q", c.Join)
				}
				if !slices.Equal(c.Origins, []string{"https://chat.example.com"}) {
					t.Errorf("origins = %q", c.Origins)
				}
			},
		},
		{
			name: "flag wins over env",
			args: []string{"--http", "127.0.0.1:1", "--rate-limit=7", "--join", "a:1"},
			env:  map[string]string{"MESHCHAT_HTTP": "127.0.0.1:2", "MESHCHAT_RATE_LIMIT": "9", "MESHCHAT_JOIN": "b:2", "MESHCHAT_GOSSIP": "127.0.0.1:3", "MESHCHAT_SECRET": "s"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != "127.0.0.1:1" || c.RateLimit != 7 || !slices.Equal(c.Join, []string{"a:1"}) {
					t.Errorf("flag did not win: %+v", c)
				}
				if c.GossipAddr != "127.0.0.1:3" {
					t.Errorf("env not used for unset flag: gossip = %q", c.GossipAddr)
				}
			},
		},
		{
			name: "flag wins even when it repeats the default",
			args: []string{"--broker", "mesh"},
			env:  map[string]string{"MESHCHAT_BROKER": "redis"},
			check: func(t *testing.T, c serveConfig) {
				if c.Broker != "mesh" {
					t.Errorf("broker = %q", c.Broker)
				}
			},
		},
		{
			name: "empty env counts as unset",
			env:  map[string]string{"MESHCHAT_HTTP": "", "MESHCHAT_BROKER": ""},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != ":8080" || c.Broker != "mesh" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "single dash flags work too",
			args: []string{"-http=:9090", "-name", "x"},
			check: func(t *testing.T, c serveConfig) {
				if c.HTTPAddr != ":9090" || c.Name != "x" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "redis broker with redis url",
			args: []string{"--broker", "redis", "--redis", "redis://127.0.0.1:6379/0"},
			check: func(t *testing.T, c serveConfig) {
				if c.Broker != "redis" || c.RedisURL != "redis://127.0.0.1:6379/0" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "redis url with mesh broker keeps mesh (sessions go to redis)",
			env:  map[string]string{"MESHCHAT_REDIS": "redis://127.0.0.1:6379/2"},
			check: func(t *testing.T, c serveConfig) {
				if c.Broker != "mesh" || c.RedisURL == "" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "bad broker", args: []string{"--broker", "kafka"}, wantErr: `--broker "kafka": want mesh or redis`},
		{name: "bad broker from env", env: map[string]string{"MESHCHAT_BROKER": "nats"}, wantErr: `--broker "nats"`},
		{name: "redis broker without redis", args: []string{"--broker", "redis"}, wantErr: "--broker redis needs --redis URL (or MESHCHAT_REDIS)"},
		{name: "redis broker from env without redis", env: map[string]string{"MESHCHAT_BROKER": "redis"}, wantErr: "--broker redis needs --redis"},
		{name: "bad redis url", args: []string{"--redis", "http://x"}, wantErr: "--redis"},
		{name: "bad duration flag", args: []string{"--history-age", "3 days"}, wantErr: "history-age"},
		{name: "bad duration env", env: map[string]string{"MESHCHAT_HISTORY_AGE": "soon"}, wantErr: `MESHCHAT_HISTORY_AGE="soon"`},
		{name: "negative duration", args: []string{"--history-age", "-1s"}, wantErr: "--history-age -1s: want >= 0"},
		{name: "bad rate", args: []string{"--rate-limit", "fast"}, wantErr: "rate-limit"},
		{name: "negative rate", args: []string{"--rate-limit", "-1"}, wantErr: "--rate-limit -1"},
		{name: "profiler on every interface", args: []string{"--debug-addr", ":6060"}, wantErr: "--debug-public"},
		{
			name: "profiler on every interface, asked for",
			args: []string{"--debug-addr", "0.0.0.0:6060", "--debug-public"},
			check: func(t *testing.T, c serveConfig) {
				if c.DebugAddr != "0.0.0.0:6060" || !c.DebugPublic {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "tls and cluster name from env",
			env: map[string]string{"MESHCHAT_TLS_CERT": "c.pem", "MESHCHAT_TLS_KEY": "k.pem", "MESHCHAT_TLS_CA": "ca.pem",
				"MESHCHAT_CLUSTER_NAME": "prod"},
			check: func(t *testing.T, c serveConfig) {
				if c.TLSCert != "c.pem" || c.TLSKey != "k.pem" || c.TLSCA != "ca.pem" || c.ClusterName != "prod" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "tls cert without key", args: []string{"--tls-cert", "c.pem"}, wantErr: "--tls-cert and --tls-key"},
		{name: "tls key from env without cert", env: map[string]string{"MESHCHAT_TLS_KEY": "k.pem"}, wantErr: "--tls-cert and --tls-key"},
		{name: "bad cluster name", args: []string{"--cluster-name", "a/b"}, wantErr: "--cluster-name"},
		{name: "bad metrics address", args: []string{"--metrics-addr", "9100"}, wantErr: `--metrics-addr "9100"`},
		{name: "join without a secret", args: []string{"--join", "10.0.0.1:7946"}, wantErr: "--join needs --secret"},
		{name: "api key with a space", env: map[string]string{"MESHCHAT_API_KEY": "k-0123456789abcdef\n"}, wantErr: "--api-key"},
		{name: "negative expect", args: []string{"--expect", "-1"}, wantErr: "--expect -1"},
		{name: "unknown auth mode", args: []string{"--auth", "ldap"}, wantErr: `--auth "ldap"`},
		{name: "jwt without a key", args: []string{"--auth", "jwt"}, wantErr: "--jwt-key"},
		{name: "jwt key without jwt", args: []string{"--jwt-key", "k"}, wantErr: "--jwt-key"},
		{name: "bad admin name", args: []string{"--admins", "root,no way"}, wantErr: `--admins "no way"`},
		{name: "negative login limit", args: []string{"--login-limit", "-1"}, wantErr: "--login-limit -1"},
		{name: "negative connection cap", args: []string{"--max-conns-per-ip", "-1"}, wantErr: "--max-conns-per-ip -1"},
		{
			name: "connection cap off",
			env:  map[string]string{"MESHCHAT_MAX_CONNS_PER_IP": "0"},
			check: func(t *testing.T, c serveConfig) {
				if c.MaxConnsPerIP != node.NoConnLimit {
					t.Errorf("--max-conns-per-ip 0 gave %d", c.MaxConnsPerIP)
				}
			},
		},
		{name: "zero history", args: []string{"--history", "0"}, wantErr: "--history 0"},
		{name: "zero history from env", env: map[string]string{"MESHCHAT_HISTORY": "0"}, wantErr: "--history 0"},
		{name: "zero frame", args: []string{"--max-frame", "0"}, wantErr: "--max-frame 0"},
		{name: "zero queue", args: []string{"--queue-bytes", "0"}, wantErr: "--queue-bytes 0"},
		{name: "bad http addr", args: []string{"--http", "8080"}, wantErr: `--http "8080"`},
		{name: "bad gossip port", env: map[string]string{"MESHCHAT_GOSSIP": ":99999"}, wantErr: `--gossip ":99999"`},
		{name: "bad join entry", args: []string{"--join", "a:1,b"}, wantErr: `--join "b"`},
		{name: "bad size", args: []string{"--max-frame", "16 parsecs"}, wantErr: "max-frame"},
		{name: "tiny frame", args: []string{"--max-frame", "10"}, wantErr: "--max-frame 10"},
		{name: "queue below frame", args: []string{"--max-frame", "64KiB", "--queue-bytes", "32KiB"}, wantErr: "--queue-bytes"},
		{name: "bad origin", args: []string{"--origins", "chat.example.com"}, wantErr: "--origins"},
		{name: "cookie domain with scheme", args: []string{"--cookie-domain", "https://chat.example.com"}, wantErr: "--cookie-domain"},
		{name: "cookie domain with port", args: []string{"--cookie-domain", "chat.example.com:8080"}, wantErr: "--cookie-domain"},
		{name: "advertise with path", args: []string{"--advertise-http", "http://h:1/x"}, wantErr: "--advertise-http"},
		{name: "bad name", args: []string{"--name", "a b"}, wantErr: "--name"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "log-level"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
		{name: "positional", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseServe(tt.args, envMap(tt.env), &bytes.Buffer{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestServeHelpListsEveryFlagWithEnvAndDefault(t *testing.T) {
	var out bytes.Buffer
	_, err := parseServe([]string{"--help"}, envMap(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	help := out.String()
	for _, f := range []string{"http", "gossip", "join", "expect", "broker", "redis", "name", "secret", "rate-limit", "api-key",
		"auth", "jwt-key", "admins", "login-limit", "register-limit",
		"history", "history-age", "max-frame", "queue-bytes", "origins", "cookie-domain", "tls-cert", "tls-key", "tls-ca", "cluster-name", "advertise-http", "data", "debug-addr", "debug-public", "metrics-addr", "log-level", "log-format"} {
		if !strings.Contains(help, "--"+f+" ") {
			t.Errorf("help lacks --%s", f)
		}
		if !strings.Contains(help, "env "+envName(f)+",") {
			t.Errorf("help lacks env %s", envName(f))
		}
	}
	for _, def := range []string{"default :8080", "default :7946", "default mesh", "default 50", "default 1000", "default 16KiB", "default 1MiB", "default text", "default info"} {
		if !strings.Contains(help, def) {
			t.Errorf("help lacks %q", def)
		}
	}
	if !strings.Contains(help, "random secret of its own") || !strings.Contains(help, "--join is\nrefused") {
		t.Error("help does not say what a node without --secret does")
	}
}

func TestEnvName(t *testing.T) {
	for flagName, want := range map[string]string{
		"http": "MESHCHAT_HTTP", "rate-limit": "MESHCHAT_RATE_LIMIT", "advertise-http": "MESHCHAT_ADVERTISE_HTTP",
	} {
		if got := envName(flagName); got != want {
			t.Errorf("envName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"16384", 16384, false},
		{"16KiB", 16384, false},
		{"16k", 16384, false},
		{"1MiB", 1 << 20, false},
		{"2 MB", 2 << 20, false},
		{"1g", 1 << 30, false},
		{"", 0, true},
		{"KiB", 0, true},
		{"-1", 0, true},
		{"1.5MiB", 0, true},
		{"5 parsecs", 0, true},
		{"99999999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := parseBytes(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
	for _, n := range []int64{0, 100, 1024, 16 << 10, 1 << 20, 3 << 30} {
		if back, err := parseBytes(formatBytes(n)); err != nil || back != n {
			t.Errorf("round trip %d via %q = %d, %v", n, formatBytes(n), back, err)
		}
	}
}
