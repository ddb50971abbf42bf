package web

import "net/http"

// corsAllowed answers a cross-origin request's CORS headers when its
// origin is allowed (originAllowed), and refuses it otherwise.
func (s *Server) corsAllowed(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Add("Vary", "Origin")
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
	}
	return true
}

// handlePreflight answers the browser's preflight of a cross-origin
// request by method that carries an Authorization header: a report
// request with the API key, a ticket request with a bearer token.
func (s *Server) handlePreflight(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.corsAllowed(w, r) {
			return
		}
		w.Header().Set("Access-Control-Allow-Methods", method)
		w.Header().Set("Access-Control-Allow-Headers", "Authorization")
		w.Header().Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
	}
}
