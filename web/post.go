package web

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/meshchat/meshchat/chat"
)

// The one-shot requests of clients on an events stream (sse.go): each is
// a client frame over plain HTTP, served by whichever node receives it
// through the hub's one-shot path, so the stream and the posts need not
// meet on one node.

// postBody is a one-shot request's body: the fields of the frame it
// stands for.
type postBody struct {
	Room string `json:"room"`
	To   string `json:"to"`
	Text string `json:"text"`
	Ref  string `json:"ref"`
}

// handleSend serves POST /api/send {"room","text","ref"}: 200 with the
// "message" frame that acknowledges it (its "id" among its fields).
func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.readPost(w, r)
	if !ok {
		return
	}
	ack, err := s.hub.Send(r.Context(), id.user, b.Room, b.Text, b.Ref)
	s.answerAck(w, ack, err)
}

// handleDM serves POST /api/dm {"to","text","ref"}: 200 with the
// sender's "dm" frame.
func (s *Server) handleDM(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.readPost(w, r)
	if !ok {
		return
	}
	ack, err := s.hub.DM(r.Context(), id.user, b.To, b.Text, b.Ref)
	s.answerAck(w, ack, err)
}

// handleTyping serves POST /api/typing {"room"}: 204.
func (s *Server) handleTyping(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.readPost(w, r)
	if !ok {
		return
	}
	if err := s.hub.Typing(r.Context(), id.user, b.Room); err != nil {
		s.writeChatError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// readPost checks a one-shot request's origin and session and reads its
// body, up to a WebSocket frame's limit; it answers the request itself
// when it returns false.
func (s *Server) readPost(w http.ResponseWriter, r *http.Request) (identity, postBody, bool) {
	var b postBody
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return identity{}, b, false
	}
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "log in first")
		return identity{}, b, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxFrameBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "body is larger than the frame limit")
		} else {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "cannot read the body")
		}
		return identity{}, b, false
	}
	if err := json.Unmarshal(body, &b); err != nil {
		writeError(w, http.StatusBadRequest, chat.CodeBadFrame, "body must be a JSON object with string fields")
		return identity{}, b, false
	}
	return id, b, true
}

// answerAck answers a one-shot send or DM.
func (s *Server) answerAck(w http.ResponseWriter, ack chat.Ack, err error) {
	if err != nil {
		s.writeChatError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(ack.Frame)
}
