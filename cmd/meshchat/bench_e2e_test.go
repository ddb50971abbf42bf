package main

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// The bench spawns real nodes and logs every client in from one address:
// more clients than a node lets log in from one address by default (30 a
// minute) must still get in.
func TestBenchSpawnsRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a node; skipped with -short")
	}
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--spawn", "mesh", "--nodes", "1", "--clients", "60", "--rooms", "1",
		"--publishers", "2", "--rate", "10", "--duration", "500ms", "--warmup", "0s", "--strict")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
}
