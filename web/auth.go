package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/sessions"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/store"
)

// Session values.
const (
	keyUser = "user"
	keySID  = "sid" // random id: what logout revokes
	keyExp  = "exp" // Unix seconds the session expires at
	// keyIssued is the Unix ms the session was issued at: a password
	// change or "log out everywhere" ends the sessions issued before it.
	// Sessions from before accounts existed lack it and are refused, so
	// their browsers are sent to log in again.
	keyIssued = "iat"
)

// identity is who a request speaks for.
type identity struct {
	user   string
	sid    string
	exp    time.Time
	issued time.Time
	token  bool // came from a bearer token, not the cookie
}

// Revocations is the cluster's record of logged-out sessions
// (store.Revocations), as the server uses it.
type Revocations interface {
	// Loaded reports whether the record is loaded; until it is, sessions
	// cannot be checked and are refused with 503.
	Loaded() bool
	// SessionRevoked reports whether the session was logged out on any
	// node, itself or among its user's many logouts.
	SessionRevoked(s store.Session) bool
	// Revoke records a logout cluster-wide; s.Until is when the session
	// would have expired anyway. The session's connections are closed.
	Revoke(ctx context.Context, s store.Session) error
}

// sessionChecker is implemented by session stores that keep sessions
// server-side (store.NewRedisSessions): a bearer token or a ticket is
// then honoured only while its session is still stored, and deleting the
// session on logout ends it everywhere. Confirming a session also keeps
// it until its end: a new one is stored only briefly, so that logins
// that never connect do not pile up. A store without it keeps the
// session in the cookie alone, which only the revocation record can end.
type sessionChecker interface {
	ConfirmSession(ctx context.Context, id string, until time.Time) (bool, error)
}

// sessionIdentity reads the session cookie.
func (s *Server) sessionIdentity(r *http.Request) (identity, bool) {
	sess, err := s.sessions.New(r, CookieName)
	if err != nil || sess == nil || sess.IsNew {
		return identity{}, false
	}
	user, _ := sess.Values[keyUser].(string)
	sid, _ := sess.Values[keySID].(string)
	exp, _ := sess.Values[keyExp].(int64)
	iat, _ := sess.Values[keyIssued].(int64)
	id := identity{user: user, sid: sid, exp: time.Unix(exp, 0), issued: time.UnixMilli(iat)}
	return id, wellFormed(id)
}

// revocation is the session as the revocation record takes it.
func (id identity) revocation() store.Session {
	return store.Session{ID: id.sid, User: id.user, Issued: id.issued, Until: id.exp}
}

func wellFormed(id identity) bool {
	return chat.ValidName(id.user) && id.sid != "" && time.Now().Before(id.exp) && id.issued.UnixMilli() > 0
}

// check confirms a well-formed identity against the cluster's logouts
// and, with server-side sessions, for a token, a ticket or a request
// that opens a stream (stream), the session store.
func (s *Server) check(ctx context.Context, id identity, stream bool) error {
	if !s.revocations.Loaded() {
		return errRevocationsLoading
	}
	if s.revocations.SessionRevoked(id.revocation()) {
		return errNoSession
	}
	if err := s.checkAccount(id); err != nil {
		return err
	}
	if (id.token || stream) && s.checker != nil {
		ok, err := s.checker.ConfirmSession(ctx, s.storeKey(id.sid), id.exp)
		if err != nil {
			s.log.Warn("checking a token's session", "err", err)
			return errSessionStore
		}
		if !ok {
			return errNoSession
		}
	}
	return nil
}

// authenticate accepts the session cookie, an Authorization: Bearer
// token, and, when stream is set (/ws and /api/events, which browsers
// open without headers of their own), ?ticket= and ?token=. A ticket
// for this node decides alone (ticket.go); otherwise the first that
// checks out wins. On failure the error says why (errNoSession,
// errRevocationsLoading, errSessionStore, a ticket's), and the identity
// is the last well-formed one seen, if any (logout revokes it
// regardless).
func (s *Server) authenticate(r *http.Request, stream bool) (identity, error) {
	otherNode := false
	if stream {
		if t := r.URL.Query().Get("ticket"); t != "" {
			id, err := s.redeemTicket(r.Context(), t)
			if !errors.Is(err, errOtherNode) {
				return id, err
			}
			otherNode = true
		}
	}
	var cands []identity
	if id, ok := s.sessionIdentity(r); ok {
		cands = append(cands, id)
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if id, ok := s.parseAnyToken(strings.TrimSpace(tok)); ok {
			cands = append(cands, id)
		}
	}
	if stream {
		if tok := r.URL.Query().Get("token"); tok != "" {
			if id, ok := s.parseAnyToken(tok); ok {
				cands = append(cands, id)
			}
		}
	}
	err := errNoSession
	if otherNode && len(cands) == 0 {
		err = errOtherNode
	}
	var last identity
	for _, id := range cands {
		e := s.check(r.Context(), id, stream)
		if e == nil {
			return id, nil
		}
		last = id
		if !errors.Is(e, errNoSession) {
			err = e // "cannot tell" beats "no"
		}
	}
	return last, err
}

// authFailed answers a request authenticate refused.
func authFailed(w http.ResponseWriter, err error, message string) {
	switch {
	case errors.Is(err, errRevocationsLoading):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable,
			"this node is still loading logouts; retry shortly or use another node")
	case errors.Is(err, errSessionStore):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot check the session right now, retry")
	case errors.Is(err, errBanned):
		writeError(w, http.StatusForbidden, CodeBanned, "this user is banned")
	case errors.Is(err, errTicketUsed):
		writeError(w, http.StatusUnauthorized, CodeTicketUsed, "this ticket was used already; fetch a new one")
	case errors.Is(err, errTicketExpired):
		writeError(w, http.StatusUnauthorized, CodeTicketExpired, "this ticket has expired; fetch a new one")
	case errors.Is(err, errBadTicket), errors.Is(err, errOtherNode):
		writeError(w, http.StatusUnauthorized, CodeBadTicket, "this ticket is not valid here")
	default:
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, message)
	}
}

// storeKey is the server-side session store's id for session sid: derived
// under the token key, so that a token (which carries sid) can be
// checked against the store without carrying the cookie's value.
func (s *Server) storeKey(sid string) string {
	mac := hmac.New(sha256.New, s.tokenKey)
	mac.Write([]byte("session-key|"))
	mac.Write([]byte(sid))
	return hex.EncodeToString(mac.Sum(nil))
}

// Tokens are "<payload>.<mac>", both base64url: payload is
// "user|sid|exp|iat" and mac its HMAC-SHA256 under TokenKey.

func (s *Server) makeToken(id identity) string {
	exp := time.Now().Add(s.cfg.TokenTTL)
	if id.exp.Before(exp) {
		exp = id.exp
	}
	return s.seal("", id.user, id.sid, strconv.FormatInt(exp.Unix(), 10),
		strconv.FormatInt(id.issued.UnixMilli(), 10))
}

func (s *Server) parseToken(tok string) (identity, bool) {
	parts, ok := s.unseal("", tok, 4)
	if !ok {
		return identity{}, false
	}
	exp, err1 := strconv.ParseInt(parts[2], 10, 64)
	iat, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil {
		return identity{}, false
	}
	id := identity{user: parts[0], sid: parts[1], exp: time.Unix(exp, 0), issued: time.UnixMilli(iat), token: true}
	return id, wellFormed(id)
}

// seal signs the fields, joined with "|", under the token key; purpose
// ("" for tokens, "ticket" for tickets) keeps one kind from passing for
// another. The result is "<payload>.<mac>", both base64url.
func (s *Server) seal(purpose string, fields ...string) string {
	payload := []byte(strings.Join(fields, "|"))
	return base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac(purpose, payload))
}

// unseal checks what seal made for purpose and returns its n fields.
func (s *Server) unseal(purpose, sealed string, n int) ([]string, bool) {
	p64, m64, ok := strings.Cut(sealed, ".")
	if !ok || len(sealed) > 512 {
		return nil, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil || !hmac.Equal(sum, s.mac(purpose, payload)) {
		return nil, false
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != n {
		return nil, false
	}
	return parts, true
}

func (s *Server) mac(purpose string, payload []byte) []byte {
	mac := hmac.New(sha256.New, s.tokenKey)
	if purpose != "" {
		// Tokens sign the payload alone, as they always have.
		mac.Write([]byte(purpose + "|"))
	}
	mac.Write(payload)
	return mac.Sum(nil)
}

func newSessionID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("web: random: " + err.Error()) // crypto/rand does not fail
	}
	return hex.EncodeToString(b[:])
}

// cookieOptions applies the per-request cookie flags gorilla's per-store
// options cannot know.
func cookieOptions(sess *sessions.Session, r *http.Request) {
	sess.Options.HttpOnly = true
	sess.Options.SameSite = http.SameSiteLaxMode
	sess.Options.Secure = isTLS(r)
}

// setHint sets, or with MaxAge < 0 clears, the hint cookie alongside the
// session cookie that opts describe.
func setHint(w http.ResponseWriter, opts *sessions.Options) {
	c := &http.Cookie{
		Name:     HintCookieName,
		Value:    "1",
		Path:     opts.Path,
		Domain:   opts.Domain,
		MaxAge:   opts.MaxAge,
		Secure:   opts.Secure,
		SameSite: http.SameSiteLaxMode,
	}
	if opts.MaxAge > 0 {
		c.Expires = time.Now().Add(time.Duration(opts.MaxAge) * time.Second)
	} else if opts.MaxAge < 0 {
		c.Value = ""
		c.Expires = time.Unix(1, 0)
	}
	http.SetCookie(w, c)
}

// loginFailed answers a refused login and counts it under code.
func (s *Server) loginFailed(w http.ResponseWriter, status int, code, message string) {
	s.CountLogin(code)
	writeError(w, status, code, message)
}

// startSession replaces whatever session the browser had with a new one
// for user, sets its cookie and returns its identity.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, user string) (identity, error) {
	sess, _ := s.sessions.New(r, CookieName) // a bad cookie yields a fresh session
	if old, _ := sess.Values[keySID].(string); old != "" {
		// A login replaces whatever session the browser had.
		user, _ := sess.Values[keyUser].(string)
		exp, _ := sess.Values[keyExp].(int64)
		iat, _ := sess.Values[keyIssued].(int64)
		replaced := store.Session{ID: old, User: user, Until: time.Unix(exp, 0)}
		if iat > 0 {
			replaced.Issued = time.UnixMilli(iat)
		}
		if err := s.revocations.Revoke(r.Context(), replaced); err != nil {
			s.log.Warn("revoking replaced session", "err", err)
		}
	}
	// A fresh id: a session id known before login is worthless after it.
	sess.IsNew = true
	sess.Values = map[any]any{}
	cookieOptions(sess, r)
	now := time.Now()
	id := identity{user: user, sid: newSessionID(), issued: now,
		exp: now.Add(time.Duration(sess.Options.MaxAge) * time.Second)}
	sess.ID = ""
	if s.checker != nil {
		// Server-side sessions are stored under a key derived from sid,
		// so that tokens can be checked against the store.
		sess.ID = s.storeKey(id.sid)
	}
	sess.Values[keyUser] = id.user
	sess.Values[keySID] = id.sid
	sess.Values[keyExp] = id.exp.Unix()
	sess.Values[keyIssued] = id.issued.UnixMilli()
	if err := sess.Save(r, w); err != nil {
		return identity{}, err
	}
	setHint(w, sess.Options)
	return id, nil
}

// loggedIn answers a successful login or registration.
func (s *Server) loggedIn(w http.ResponseWriter, r *http.Request, user string) {
	id, err := s.startSession(w, r, user)
	if err != nil {
		s.log.Error("saving session", "err", err)
		s.loginFailed(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot store the session right now")
		return
	}
	s.logSession("login", "user", user, "addr", clientAddr(r))
	s.CountLogin(LoginOK)
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "node": s.node, "token": s.makeToken(id)})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	// A well-formed session is revoked even when this node cannot tell
	// yet whether it already was.
	if id, _ := s.authenticate(r, false); id.sid != "" {
		if err := s.revocations.Revoke(r.Context(), id.revocation()); err != nil {
			// A cookie session lives on until its revocation is known
			// cluster-wide; server-side sessions die with their key
			// below.
			if s.checker == nil {
				writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot log out right now, retry")
				return
			}
			s.log.Warn("revoking session", "err", err)
		}
	}
	sess, _ := s.sessions.New(r, CookieName)
	cookieOptions(sess, r)
	sess.Values = map[any]any{}
	sess.Options.MaxAge = -1 // deletes the Redis key; expires the cookie
	if err := sess.Save(r, w); err != nil {
		s.log.Error("deleting session", "err", err)
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot log out right now, retry")
		return
	}
	setHint(w, sess.Options)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "not logged in")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": id.user, "node": s.node, "admin": s.admins[id.user]})
}
