package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// publicSecret is what every node without --secret used to share: anyone
// who read the README could forge its sessions and join its cluster.
const publicSecret = "meshchat-insecure-default-secret-change-me"

// keysWithout derives the keys of a node given no secret.
func keysWithout(t *testing.T, dataDir string) keys {
	t.Helper()
	n, err := New(Config{Name: "n1", DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.deriveKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n.keys
}

func TestNoSecretMeansAnOwnRandomOne(t *testing.T) {
	public, err := deriveKeys(publicSecret)
	if err != nil {
		t.Fatal(err)
	}
	a, b := keysWithout(t, ""), keysWithout(t, "")
	if bytes.Equal(a.SessionHash, public.SessionHash) || bytes.Equal(a.Mesh, public.Mesh) || bytes.Equal(a.Gossip, public.Gossip) {
		t.Fatal("a node without --secret uses the public default's keys")
	}
	if bytes.Equal(a.SessionHash, b.SessionHash) {
		t.Fatal("two nodes without --secret share keys")
	}
}

func TestOwnSecretKeptInDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, again := keysWithout(t, dir), keysWithout(t, dir)
	if !bytes.Equal(first.SessionHash, again.SessionHash) || !bytes.Equal(first.Token, again.Token) {
		t.Fatal("a restart with the same --data made another secret: every session would end")
	}
	st, err := os.Stat(filepath.Join(dir, secretFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(dir, secretFile), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ownSecret(dir); err == nil {
		t.Error("an empty secret file was accepted")
	}
}
