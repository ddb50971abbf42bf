package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// A node with a PeersFile keeps the peers it saw, and a node started
// later from that file, without seeds, joins them.
func TestPeersFileRejoins(t *testing.T) {
	file := filepath.Join(t.TempDir(), "data", "peers.json")
	keep := func(c *Config) { c.PeersFile = file }
	a, _ := startNode(t, "a", "127.0.0.1:0", nil, testKey, nil)
	b, _ := startNode(t, "b", "127.0.0.1:0", []string{a.BindAddr()}, testKey, keep)
	clustertest.WaitFor(t, 10*time.Second, "the peer kept in the file", func() bool {
		kept, err := readPeers(file)
		return err == nil && slices.Equal(kept, []string{a.BindAddr()})
	})
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, _ := startNode(t, "c", "127.0.0.1:0", nil, testKey, keep)
	clustertest.WaitFor(t, 10*time.Second, "a node without seeds joins the kept peer", func() bool {
		return stateOf(c, "a") == StateAlive && stateOf(a, "c") == StateAlive
	})
	if !c.Joined() || c.ExpectsPeers() {
		t.Fatalf("joined %v, expects peers %v: kept peers are not seeds", c.Joined(), c.ExpectsPeers())
	}
}

// A damaged file is ignored: the node starts on its seeds alone.
func TestPeersFileDamaged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "peers.json")
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := startNode(t, "c", "127.0.0.1:0", nil, testKey, func(c *Config) { c.PeersFile = file })
	if len(c.known) != 0 || !c.Joined() {
		t.Fatalf("known %v joined %v", c.known, c.Joined())
	}
}
