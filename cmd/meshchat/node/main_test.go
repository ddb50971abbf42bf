package node_test

import (
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// TestMain fails the run when a stopped node leaves goroutines behind: its
// own, or its gossip, Redis, WebSocket and HTTP connections'.
func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m, clustertest.NetworkGoroutines...) }
