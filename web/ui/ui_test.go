package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/web/ui"
)

func TestHandler(t *testing.T) {
	h := ui.Handler()
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		status   int
		ctype    string // prefix
		contains string
	}{
		{name: "root", path: "/", status: 200, ctype: "text/html", contains: `id="login-name"`},
		{name: "index", path: "/index.html", status: 200, ctype: "text/html", contains: "<!doctype html>"},
		{name: "app js", path: "/app.js", status: 200, ctype: "text/javascript", contains: `from "/model.js"`},
		{name: "model js", path: "/model.js", status: 200, ctype: "text/javascript", contains: "export class Conversations"},
		{name: "client js", path: "/meshchat.js", status: 200, ctype: "text/javascript", contains: "export class MeshchatClient"},
		{name: "css", path: "/style.css", status: 200, ctype: "text/css", contains: ".messages"},
		{name: "svg", path: "/favicon.svg", status: 200, ctype: "image/svg+xml"},
		{name: "head", method: http.MethodHead, path: "/app.js", status: 200, ctype: "text/javascript"},
		{name: "missing asset", path: "/missing.js", header: map[string]string{"Accept": "*/*"}, status: 404},
		{name: "missing asset html accept", path: "/img/missing.png", header: map[string]string{"Accept": "text/html"}, status: 404},
		{name: "navigation", path: "/rooms/general", header: map[string]string{"Accept": "text/html,application/xhtml+xml"}, status: 200, ctype: "text/html", contains: `id="login-name"`},
		{name: "navigation fetch metadata", path: "/dm/bob", header: map[string]string{"Sec-Fetch-Mode": "navigate"}, status: 200, ctype: "text/html"},
		{name: "fetch not navigation", path: "/dm/bob", header: map[string]string{"Sec-Fetch-Mode": "cors", "Accept": "text/html"}, status: 404},
		{name: "no accept", path: "/somewhere", status: 404},
		{name: "api stays 404", path: "/api/nothing", header: map[string]string{"Accept": "text/html"}, status: 404},
		{name: "internal stays 404", path: "/_mesh/x", header: map[string]string{"Accept": "text/html"}, status: 404},
		{name: "post", method: http.MethodPost, path: "/", status: 405},
		{name: "dir slash", path: "/index.html/", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.status)
			}
			if tt.ctype != "" && !strings.HasPrefix(res.Header.Get("Content-Type"), tt.ctype) {
				t.Errorf("Content-Type = %q, want prefix %q", res.Header.Get("Content-Type"), tt.ctype)
			}
			if tt.contains != "" && !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
			if tt.status == 200 {
				if res.Header.Get("ETag") == "" || res.Header.Get("Cache-Control") != "no-cache" {
					t.Errorf("cache headers: ETag %q, Cache-Control %q", res.Header.Get("ETag"), res.Header.Get("Cache-Control"))
				}
				if res.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Error("missing nosniff")
				}
			}
		})
	}
}

func TestHandlerPageHeaders(t *testing.T) {
	h := ui.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("index CSP = %q", csp)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin.html", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("admin page CSP = %q", csp)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/app.js", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); csp != "" {
		t.Errorf("asset has CSP %q", csp)
	}
}

func TestHandlerRevalidation(t *testing.T) {
	h := ui.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/style.css", nil))
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req := httptest.NewRequest(http.MethodGet, "/style.css", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("status = %d, want 304", rec.Code)
	}
	if rec.Body.Len() != 0 {
		t.Error("304 with a body")
	}
}

func TestFS(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "model.js", "meshchat.js", "style.css"} {
		b, err := fs.ReadFile(ui.FS(), name)
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v (%d bytes)", name, err, len(b))
		}
	}
}

// TestNoHTMLSinks keeps user text out of the HTML parser: the app renders
// through text nodes only.
func TestNoHTMLSinks(t *testing.T) {
	for _, name := range []string{"app.js", "model.js", "meshchat.js", "admin.js", "page.js"} {
		b, err := fs.ReadFile(ui.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(string(b), sink) {
				t.Errorf("%s uses %s", name, sink)
			}
		}
	}
}
