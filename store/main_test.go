package store

import (
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// TestMain fails the run when goroutines of the sessions or the record of
// logouts outlive the tests.
func TestMain(m *testing.M) { clustertest.VerifyOwnTestMain(m, "github.com/redis/go-redis") }
