package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/meshchat/meshchat/chat"
)

// The server API, /api/server/..., is for other programs (a cron job, a
// bot, another service), not for browsers: it authenticates with the
// operator's key (Config.APIKey) in "Authorization: Bearer <key>", takes
// no cookie (so no origin check), and acts as any user. Without a key it
// is not mounted: every path answers 404. Its posts go through the chat
// hub's entry points (chat.Hub.PublishAs, DMAs, ...), the same publish
// path, validation and error codes as WebSocket frames.

// maxAPIBody bounds a server API request body: room for the longest text
// chat accepts, escaped.
const maxAPIBody = 64 << 10

// serverAPI is the router mounted at /api/server when a key is set.
func (s *Server) serverAPI() http.Handler {
	r := newJSONRouter()
	r.Use(s.requireAPIKey)
	r.Post("/publish", s.handleAPIPublish)
	r.Post("/dm", s.handleAPIDM)
	r.Get("/history", s.handleAPIHistory)
	r.Get("/rooms", s.handleAPIRooms)
	r.Get("/presence", s.handleAPIPresence)
	r.Post("/disconnect", s.handleAPIDisconnect)
	r.Post("/delete", s.handleAPIDelete)
	return r
}

// newJSONRouter is a router that answers unknown paths and wrong methods
// with JSON errors.
func newJSONRouter() *chi.Mux {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllow, "method not allowed")
	})
	return r
}

// requireAPIKey lets through requests that carry the API key. The key is
// compared as a SHA-256 digest in constant time, so neither its bytes
// nor its length leak through timing.
func (s *Server) requireAPIKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hasAPIKey(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshchat server API"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthorized, "missing or wrong API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hasAPIKey reports whether r carries the API key as its bearer token;
// never when no key is set.
func (s *Server) hasAPIKey(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return ok && s.cfg.APIKey != "" && subtle.ConstantTimeCompare(sum[:], s.apiKeySum[:]) == 1
}

// readAPIBody decodes a JSON request body into v, or answers the request
// and returns false.
func readAPIBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge,
				"body is larger than "+strconv.Itoa(maxAPIBody)+" bytes")
		} else {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the body")
		}
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "body must be a JSON object of the documented fields")
		return false
	}
	return true
}

// writeChatError answers a failure of the hub's Go API (the server API,
// one-shot posts): the code an error frame would carry, under the HTTP
// status that fits it.
func (s *Server) writeChatError(w http.ResponseWriter, err error) {
	var e *chat.Error
	if !errors.As(err, &e) {
		s.log.Error("server API", "err", err)
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return
	}
	status := http.StatusBadRequest
	switch e.Code {
	case chat.CodeForbidden:
		status = http.StatusForbidden
	case chat.CodeNotFound, chat.CodeNoSuchUser:
		status = http.StatusNotFound
	case chat.CodeRateLimited:
		w.Header().Set("Retry-After", "1")
		status = http.StatusTooManyRequests
	case chat.CodeUnavailable:
		status = http.StatusServiceUnavailable
	case chat.CodeInternal:
		status = http.StatusInternalServerError
	}
	writeError(w, status, e.Code, e.Message)
}

// apiPost is the body of /publish and /dm.
type apiPost struct {
	From string `json:"from"`
	Room string `json:"room"`
	To   string `json:"to"`
	Text string `json:"text"`
	Ref  string `json:"ref"`
}

func (s *Server) handleAPIPublish(w http.ResponseWriter, r *http.Request) {
	s.answerPost(w, r, func(p apiPost) (string, error) {
		return s.hub.PublishAs(r.Context(), p.From, p.Room, p.Text, p.Ref)
	})
}

func (s *Server) handleAPIDM(w http.ResponseWriter, r *http.Request) {
	s.answerPost(w, r, func(p apiPost) (string, error) {
		return s.hub.DMAs(r.Context(), p.From, p.To, p.Text, p.Ref)
	})
}

// answerPost reads a post's body, hands it to post and answers {"id"} or
// the error.
func (s *Server) answerPost(w http.ResponseWriter, r *http.Request, post func(apiPost) (string, error)) {
	var p apiPost
	if !readAPIBody(w, r, &p) {
		return
	}
	id, err := post(p)
	if err != nil {
		s.writeChatError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id})
}

func (s *Server) handleAPIHistory(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "limit must be a whole number from 1 to "+strconv.Itoa(chat.MaxHistoryLimit))
			return
		}
		limit = n
	}
	hist, err := s.hub.History(r.Context(), room, limit)
	if err != nil {
		s.writeChatError(w, err)
		return
	}
	msgs := make([]json.RawMessage, len(hist))
	for i, m := range hist {
		msgs[i] = m
	}
	writeJSON(w, http.StatusOK, struct {
		Room     string            `json:"room"`
		Messages []json.RawMessage `json:"messages"`
	}{room, msgs})
}

type apiRoom struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
	Local   int    `json:"local"`
}

func (s *Server) handleAPIRooms(w http.ResponseWriter, r *http.Request) {
	rooms := []apiRoom{}
	for _, ri := range s.hub.Rooms() {
		rooms = append(rooms, apiRoom{Room: ri.Name, Members: ri.Members, Local: ri.Local})
	}
	writeJSON(w, http.StatusOK, struct {
		Node  string    `json:"node"`
		Scope string    `json:"scope"`
		Rooms []apiRoom `json:"rooms"`
	}{s.node, "node", rooms})
}

func (s *Server) handleAPIPresence(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	users, err := s.hub.Presence(r.Context(), room)
	if err != nil {
		s.writeChatError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Room    string   `json:"room"`
		Members []string `json:"members"`
	}{room, users})
}

func (s *Server) handleAPIDisconnect(w http.ResponseWriter, r *http.Request) {
	var body struct {
		User string `json:"user"`
	}
	if !readAPIBody(w, r, &body) {
		return
	}
	if err := s.hub.DisconnectUser(r.Context(), body.User); err != nil {
		s.writeChatError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleAPIDelete deletes a room's message for every member
// (chat.Hub.Delete); "by", optional, is the user the members are told
// deleted it.
func (s *Server) handleAPIDelete(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Room string `json:"room"`
		ID   string `json:"id"`
		By   string `json:"by"`
	}
	if !readAPIBody(w, r, &body) {
		return
	}
	if err := s.hub.Delete(r.Context(), body.Room, body.ID, body.By); err != nil {
		s.writeChatError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
