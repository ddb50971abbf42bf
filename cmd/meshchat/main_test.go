package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
)

// binDir holds the meshchat binary the end-to-end tests run. TestMain
// creates and removes it; buildBinary fills it once, on first use, so a
// run of only the fast tests does not pay for a build.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshchat-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Besides meshchat's own goroutines, those of its network
		// dependencies must be gone too.
		if err := clustertest.CheckOwnGoroutines(10*time.Second, clustertest.NetworkGoroutines...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// buildBinary builds ./ (this command) once per test binary.
func buildBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(binDir, "meshchat")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-ldflags", "-X main.version=e2e-test", "-o", binPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binError = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

func TestRunCommands(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{args: nil, wantCode: 2, wantErr: "Usage:"},
		{args: []string{"help"}, wantCode: 0, wantOut: "meshchat serve"},
		{args: []string{"version"}, wantCode: 0, wantOut: "meshchat "},
		{args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{args: []string{"serve", "--help"}, wantCode: 0, wantOut: "MESHCHAT_RATE_LIMIT"},
		{args: []string{"help", "serve"}, wantCode: 0, wantOut: "MESHCHAT_HTTP"},
		{args: []string{"serve", "--broker", "redis"}, wantCode: 2, wantErr: "--broker redis needs --redis"},
		{args: []string{"demo", "--help"}, wantCode: 0, wantOut: "--nodes"},
		{args: []string{"demo", "--nodes", "0"}, wantCode: 2, wantErr: "--nodes 0"},
		{args: []string{"demo", "--broker", "redis"}, wantCode: 2, wantErr: "needs --redis"},
		{args: []string{"publish", "--help"}, wantCode: 0, wantOut: "MESHCHAT_API_KEY"},
		{args: []string{"publish", "--room", "r", "--from", "f", "hi"}, wantCode: 2, wantErr: "--api-key (or MESHCHAT_API_KEY) is required"},
		{args: []string{"publish", "--api-key", "k", "hi"}, wantCode: 2, wantErr: "--room and --from are required"},
		{args: []string{"publish", "--nope"}, wantCode: 2, wantErr: "publish: flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), func() {}, tt.args, &out, &errOut, envMap(nil))
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.wantErr)
			}
		})
	}
}

func TestVersionFromLdflags(t *testing.T) {
	out, err := exec.Command(buildBinary(t), "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "meshchat e2e-test" {
		t.Fatalf("version: %q, %v", out, err)
	}
}
