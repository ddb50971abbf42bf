package cluster

import (
	"context"
	"testing"
)

func TestIsSelf(t *testing.T) {
	tests := []struct {
		seed     string
		bindHost string
		port     int
		want     bool
	}{
		{"127.0.0.1:7946", "127.0.0.1", 7946, true},
		{"localhost:7946", "127.0.0.1", 7946, true},
		{"127.0.1.1:7946", "", 7946, true},            // a hostname's loopback alias, bound to all
		{"127.0.0.1:7946", "0.0.0.0", 7946, true},     // bound to all interfaces
		{"127.0.0.1:7947", "127.0.0.1", 7946, false},  // another node on this host
		{"127.0.1.1:7946", "192.0.2.10", 7946, false}, // bound elsewhere: loopback is not us
		{"192.0.2.99:7946", "", 7946, false},          // another host
		{"not a seed", "", 7946, false},
	}
	for _, tt := range tests {
		if got := isSelf(context.Background(), tt.seed, tt.bindHost, tt.port); got != tt.want {
			t.Errorf("isSelf(%q, bind %q, port %d) = %v, want %v", tt.seed, tt.bindHost, tt.port, got, tt.want)
		}
	}
}
