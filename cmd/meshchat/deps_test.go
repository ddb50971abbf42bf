package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/meshchat/meshchat"

// pkgDeps is what the import rules need to know about one package.
type pkgDeps struct {
	ImportPath   string
	Deps         []string // transitive, non-test
	TestImports  []string // direct, from _test.go files in the package
	XTestImports []string // direct, from package x_test files
}

// layer names the part of the tree a package belongs to ("" outside the
// module or for the helpers the rules do not constrain).
func layer(path string) string {
	rel, ok := strings.CutPrefix(path, modulePath+"/")
	if !ok {
		return ""
	}
	top, _, _ := strings.Cut(rel, "/")
	return top
}

// testHelpers are the test kit: tests of any layer may import them, no
// production package may, except another helper.
var testHelpers = []string{
	modulePath + "/cluster/clustertest",        // waits, free ports, binaries, leak checks
	modulePath + "/store/redistest",            // a throwaway redis-server
	modulePath + "/transport/brokertest",       // the broker conformance suite
	modulePath + "/web/webtest",                // the protocol client
	modulePath + "/cmd/meshchat/node/nodetest", // whole nodes
}

// wholeNode is the node package: a test of any layer that needs a whole
// node uses it (through nodetest) rather than wiring the parts again.
const wholeNode = modulePath + "/cmd/meshchat/node"

// metricsModule is Prometheus's client: only the node (cmd) builds
// metrics; the parts below it expose plain counters (chat.Stats,
// mesh.Stats, web.Stats) and observe through transport.Observer.
const metricsModule = "github.com/prometheus/"

// importViolations applies the import direction
// cmd -> web -> chat -> transport, with store and cluster as leaves:
// cluster imports nothing of the module; store imports only transport;
// chat imports only transport; web never imports cluster (it declares
// the membership it needs); transport never imports chat, web, store or
// cluster; nothing imports cmd; production code never imports the test
// helpers; only cmd imports Prometheus.
func importViolations(pkgs []pkgDeps) []string {
	forbidden := map[string][]string{
		"transport": {"chat", "web", "cmd", "store", "cluster"},
		"store":     {"chat", "web", "cmd", "cluster"},
		"cluster":   {"chat", "web", "cmd", "transport", "store"},
		"chat":      {"web", "cmd", "cluster", "store"},
		"web":       {"cmd", "cluster"},
	}
	var out []string
	check := func(from, to, how string) {
		if layer(to) == "" || slices.Contains(testHelpers, from) {
			return
		}
		if slices.Contains(forbidden[layer(from)], layer(to)) {
			if how != "" && (slices.Contains(testHelpers, to) || to == wholeNode) {
				return // a test of any layer may use the test kit and whole nodes
			}
			out = append(out, fmt.Sprintf("%s %simports %s", from, how, to))
		}
	}
	for _, p := range pkgs {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, metricsModule) && layer(p.ImportPath) != "" && layer(p.ImportPath) != "cmd" {
				out = append(out, fmt.Sprintf("%s imports %s (metrics are built in the node)", p.ImportPath, d))
			}
			check(p.ImportPath, d, "")
			if slices.Contains(testHelpers, d) && !slices.Contains(testHelpers, p.ImportPath) {
				out = append(out, fmt.Sprintf("%s imports test helper %s", p.ImportPath, d))
			}
		}
		for _, d := range slices.Concat(p.TestImports, p.XTestImports) {
			if d == p.ImportPath {
				continue
			}
			check(p.ImportPath, d, "(in tests) ")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestImportViolationsRules(t *testing.T) {
	m := func(p string) string { return modulePath + "/" + p }
	tests := []struct {
		name string
		pkg  pkgDeps
		want int
	}{
		{"web uses chat", pkgDeps{ImportPath: m("web"), Deps: []string{m("chat"), m("transport")}}, 0},
		{"web uses store", pkgDeps{ImportPath: m("web"), Deps: []string{m("store")}}, 0},
		{"chat uses transport", pkgDeps{ImportPath: m("chat"), Deps: []string{m("transport"), m("transport/inproc")}}, 0},
		{"store uses transport", pkgDeps{ImportPath: m("store"), Deps: []string{m("transport")}}, 0},
		{"cmd uses everything", pkgDeps{ImportPath: m("cmd/meshchat"), Deps: []string{m("web"), m("chat"), m("transport/mesh"), m("store"), m("cluster")}}, 0},
		{"transport imports chat", pkgDeps{ImportPath: m("transport/mesh"), Deps: []string{m("chat")}}, 1},
		{"transport imports web", pkgDeps{ImportPath: m("transport/redis"), Deps: []string{m("web")}}, 1},
		{"transport imports store", pkgDeps{ImportPath: m("transport/redis"), Deps: []string{m("store")}}, 1},
		{"transport imports cluster", pkgDeps{ImportPath: m("transport"), Deps: []string{m("cluster")}}, 1},
		{"transport/mesh imports cluster", pkgDeps{ImportPath: m("transport/mesh"), Deps: []string{m("cluster")}}, 1},
		{"store imports chat", pkgDeps{ImportPath: m("store"), Deps: []string{m("chat")}}, 1},
		{"store imports web", pkgDeps{ImportPath: m("store"), Deps: []string{m("web")}}, 1},
		{"store imports cluster", pkgDeps{ImportPath: m("store"), Deps: []string{m("cluster")}}, 1},
		{"cluster imports transport", pkgDeps{ImportPath: m("cluster"), Deps: []string{m("transport")}}, 1},
		{"cluster imports chat", pkgDeps{ImportPath: m("cluster"), Deps: []string{m("chat")}}, 1},
		{"cluster imports web", pkgDeps{ImportPath: m("cluster"), Deps: []string{m("web")}}, 1},
		{"cluster imports store", pkgDeps{ImportPath: m("cluster"), Deps: []string{m("store")}}, 1},
		{"web imports cluster", pkgDeps{ImportPath: m("web"), Deps: []string{m("cluster")}}, 1},
		{"chat imports web", pkgDeps{ImportPath: m("chat"), Deps: []string{m("web")}}, 1},
		{"chat imports cluster", pkgDeps{ImportPath: m("chat"), Deps: []string{m("cluster")}}, 1},
		{"chat imports store", pkgDeps{ImportPath: m("chat"), Deps: []string{m("store")}}, 1},
		{"web imports cmd", pkgDeps{ImportPath: m("web"), Deps: []string{m("cmd/meshchat/internal/bench")}}, 1},
		{"production imports redistest", pkgDeps{ImportPath: m("web"), Deps: []string{m("store/redistest")}}, 1},
		{"production imports brokertest", pkgDeps{ImportPath: m("web"), Deps: []string{m("transport/brokertest")}}, 1},
		{"chat imports redistest", pkgDeps{ImportPath: m("chat"), Deps: []string{m("store/redistest")}}, 2}, // store, and a test helper
		{"transport test uses redistest", pkgDeps{ImportPath: m("transport/redis"), TestImports: []string{m("store/redistest")}}, 0},
		{"chat test uses redistest", pkgDeps{ImportPath: m("chat"), TestImports: []string{m("store/redistest")}}, 0},
		{"cluster test uses brokertest", pkgDeps{ImportPath: m("cluster"), XTestImports: []string{m("transport/brokertest")}}, 0},
		{"brokertest uses redistest", pkgDeps{ImportPath: m("transport/brokertest"), Deps: []string{m("store/redistest")}}, 0},
		{"ui test runs whole nodes", pkgDeps{ImportPath: m("web/ui"), XTestImports: []string{m("cmd/meshchat/node"), m("cmd/meshchat/node/nodetest"), m("web/webtest")}}, 0},
		{"web imports the node", pkgDeps{ImportPath: m("web"), Deps: []string{m("cmd/meshchat/node")}}, 1},
		{"cluster test uses the kit", pkgDeps{ImportPath: m("cluster"), TestImports: []string{m("cluster/clustertest")}}, 0},
		{"production imports the kit", pkgDeps{ImportPath: m("cmd/meshchat"), Deps: []string{m("web/webtest")}}, 1},
		{"transport test imports chat", pkgDeps{ImportPath: m("transport/mesh"), XTestImports: []string{m("chat")}}, 1},
		{"chat test imports store", pkgDeps{ImportPath: m("chat"), TestImports: []string{m("store")}}, 1},
		{"web test imports cluster", pkgDeps{ImportPath: m("web"), TestImports: []string{m("cluster")}}, 1},
		{"cluster test imports transport", pkgDeps{ImportPath: m("cluster"), XTestImports: []string{m("transport/inproc")}}, 1},
		{"the node uses prometheus", pkgDeps{ImportPath: m("cmd/meshchat/node"), Deps: []string{"github.com/prometheus/client_golang/prometheus"}}, 0},
		{"chat imports prometheus", pkgDeps{ImportPath: m("chat"), Deps: []string{"github.com/prometheus/client_golang/prometheus"}}, 1},
		{"transport imports prometheus", pkgDeps{ImportPath: m("transport/mesh"), Deps: []string{"github.com/prometheus/client_golang/prometheus"}}, 1},
		{"web imports prometheus", pkgDeps{ImportPath: m("web"), Deps: []string{"github.com/prometheus/common/expfmt"}}, 1},
		{"stdlib and modules are free", pkgDeps{ImportPath: m("transport"), Deps: []string{"context", "github.com/redis/go-redis/v9"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := importViolations([]pkgDeps{tt.pkg}); len(got) != tt.want {
				t.Errorf("violations = %q, want %d", got, tt.want)
			}
		})
	}
}

// TestImportDirection checks the real tree with `go list -deps`-style data.
func TestImportDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,TestImports,XTestImports,Error", modulePath+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkgDeps
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			pkgDeps
			Error *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Error != nil {
			t.Logf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p.pkgDeps)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, v := range importViolations(pkgs) {
		t.Error("forbidden import: " + v)
	}
}
