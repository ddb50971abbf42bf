package cluster

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// peersFile is the content of Config.PeersFile.
type peersFile struct {
	// Peers are the gossip host:port of the other nodes this node knew.
	Peers []string `json:"peers"`
}

// readPeers reads the peers kept in path. A missing file (or no path) is
// no peers.
func readPeers(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pf peersFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range pf.Peers {
		if _, _, err := splitHostPort(p); err == nil && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// knownPeers are the gossip addresses of every other node in the member
// table (alive, or dead or left and not yet reaped), sorted.
func (c *Cluster) knownPeers() []string {
	c.mu.Lock()
	var out []string
	for name, m := range c.members {
		if name != c.cfg.Name && m.node.Addr != "" {
			out = append(out, m.node.Addr)
		}
	}
	c.mu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}

// savePeers writes the known peers to Config.PeersFile when they changed
// since the last write. It runs on the coalescing goroutine, after a
// membership change; the file is replaced whole (written aside, then
// renamed), so a crash leaves the old one or the new one.
func (c *Cluster) savePeers(last *[]string) {
	path := c.cfg.PeersFile
	if path == "" {
		return
	}
	peers := c.knownPeers()
	if len(peers) == 0 || slices.Equal(peers, *last) {
		// A node alone keeps what it knew: the peers may come back.
		return
	}
	b, _ := json.Marshal(peersFile{Peers: peers}) // strings only: cannot fail
	if err := writeFileAtomic(path, b); err != nil {
		c.log.Warn("cannot keep the known peers", "file", path, "err", err)
		return
	}
	*last = peers
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
