// Package ui owns meshchat's browser front end: a static single-page app
// (index.html, style.css; model.js, the conversations and their state;
// app.js, the view that renders them and wires the page), the admin view
// (admin.html, admin.js: every node's report, live), page.js (what both
// pages share) and meshchat.js,
// the dependency-free protocol client that other web apps may embed on
// their own pages. The in-browser tests of meshchat.js and model.js live
// in testdata and run in Chromium from browser_test.go.
//
// The files are embedded at build time with go:embed; there is no build
// step. Handler serves them and is meant to be mounted at "/" after the
// API, /ws and other routes, so that only what those do not claim reaches
// it. Handler and FS keep no mutable state: each call to Handler hashes the
// embedded files once for its ETags and the result is safe for concurrent
// use.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// FS returns the app's static files, rooted at the directory that holds
// index.html.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// fs.Sub fails only on an invalid directory name, and "static" is
		// a constant that go:embed has already checked.
		panic(fmt.Sprintf("ui: %v", err))
	}
	return sub
}

// contentTypes pins the types of what the app ships instead of trusting
// the host's mime tables, which differ between systems (some map .js to
// application/x-javascript, which module scripts reject).
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".webmanifest": "application/manifest+json",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".txt":         "text/plain; charset=utf-8",
}

// indexCSP keeps the page free of inline script and of scripts from
// elsewhere, so that text which escaped escaping still could not run.
// WebSocket connections may go to any node (failover across hosts).
const indexCSP = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self' ws: wss: http: https:; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

type file struct {
	data  []byte
	etag  string
	ctype string
	page  bool // index.html: gets the page-only security headers
}

type handler struct {
	files map[string]file // by URL path, "/index.html"
	index file
}

// Handler serves the app. "/" and "/index.html" answer with the page;
// assets answer with their content type, an ETag and "no-cache" (the
// names carry no content hash, so browsers revalidate and get a cheap
// 304 when nothing changed). A GET for an unknown path that a browser
// navigates to (Accept: text/html, no file extension) gets the page, so
// deep links keep working; any other unknown path is a 404, as are
// paths under /api/ and /_ that belong to the server. Only GET and HEAD
// are allowed.
func Handler() http.Handler {
	h := &handler{files: make(map[string]file)}
	root := FS()
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = http.DetectContentType(data)
		}
		h.files["/"+p] = file{
			data:  data,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
			ctype: ct,
		}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("ui: reading embedded files: %v", err))
	}
	// Pages (index.html, admin.html) get the page-only headers.
	for p, f := range h.files {
		if path.Ext(p) == ".html" {
			f.page = true
			h.files[p] = f
		}
	}
	h.index = h.files["/index.html"]
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "" || p == "/" {
		p = "/index.html"
	}
	if f, ok := h.files[path.Clean(p)]; ok && !strings.HasSuffix(p, "/") {
		h.serve(w, r, f)
		return
	}
	if isNavigation(r, p) {
		h.serve(w, r, h.index)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.NotFound(w, r)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, f file) {
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if f.page {
		hd.Set("Content-Security-Policy", indexCSP)
		hd.Set("Referrer-Policy", "same-origin")
	}
	// ServeContent answers If-None-Match with 304, handles HEAD and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

// isNavigation tells a browser loading a page (which should get the app)
// from a script or asset fetch that missed (which should see a 404 rather
// than HTML posing as JavaScript).
func isNavigation(r *http.Request, p string) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/_") || p == "/ws" {
		return false
	}
	if path.Ext(p) != "" {
		return false
	}
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" {
		return m == "navigate"
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
