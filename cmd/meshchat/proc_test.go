package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
)

// proc is one meshchat serve process of the real binary.
type proc struct {
	*clustertest.Process
	name   string
	url    string
	gossip string
	log    string // path of its combined output
}

// startProc runs `meshchat serve --auth open` with the given extra flags. The secret
// goes through the environment, the rest through flags, so both paths are
// exercised. The process is killed when the test ends.
func startProc(t *testing.T, name string, join string, extra ...string) *proc {
	t.Helper()
	return startProcOn(t, name, clustertest.FreeAddr(t, false), clustertest.FreeAddr(t, true), join, extra...)
}

// startProcOn is startProc on given addresses, so that a stopped node can
// be started again where its peers and clients expect it.
func startProcOn(t *testing.T, name, httpAddr, gossipAddr, join string, extra ...string) *proc {
	t.Helper()
	return startProcWrapped(t, nil, name, httpAddr, gossipAddr, join, extra...)
}

// startProcWrapped is startProcOn with the binary run by the command wrap
// (as in ip netns exec NS meshchat ...); nil runs it directly.
func startProcWrapped(t *testing.T, wrap []string, name, httpAddr, gossipAddr, join string, extra ...string) *proc {
	t.Helper()
	bin := buildBinary(t)
	// Users log in by name, and every client comes from 127.0.0.1
	// without a cap, unless extra says otherwise (a later flag wins).
	args := []string{"serve", "--http", httpAddr, "--gossip", gossipAddr, "--name", name, "--log-level", "debug", "--auth", "open", "--max-conns-per-ip", "0"}
	if join != "" {
		args = append(args, "--join", join)
	}
	args = append(args, extra...)
	p := &proc{name: name, url: "http://" + httpAddr, gossip: gossipAddr, log: filepath.Join(t.TempDir(), name+".log")}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(slices.Clone(wrap), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(), "MESHCHAT_SECRET="+nodetest.Secret)
	p.Process, err = clustertest.StartProcess(cmd)
	f.Close() // the child has its own copy
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			out, _ := os.ReadFile(p.log)
			t.Logf("--- %s output ---\n%s", name, out)
		}
	})
	return p
}

// cleanEnv is the environment without MESHCHAT_ variables, so a developer's
// shell cannot change what the test runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}
