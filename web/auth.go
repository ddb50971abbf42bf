package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/sessions"

	"github.com/meshchat/meshchat/chat"
)

// Session values.
const (
	keyUser = "user"
	keySID  = "sid" // random id: what logout revokes
	keyExp  = "exp" // Unix seconds the session expires at
)

// identity is who a request speaks for.
type identity struct {
	user  string
	sid   string
	exp   time.Time
	token bool // came from a bearer token, not the cookie
}

// Revocations is the cluster's record of logged-out sessions
// (store.Revocations), as the server uses it.
type Revocations interface {
	// Loaded reports whether the record is loaded; until it is, sessions
	// cannot be checked and are refused with 503.
	Loaded() bool
	// Revoked reports whether the session was logged out on any node.
	Revoked(session string) bool
	// Revoke records a logout cluster-wide; until is when the session
	// would have expired anyway. The session's connections are closed.
	Revoke(ctx context.Context, session string, until time.Time) error
}

// sessionChecker is implemented by session stores that keep sessions
// server-side (store.NewRedisSessions): a bearer token is then honoured
// only while its session is still stored, and deleting the session on
// logout ends it everywhere. A store without it keeps the session in the
// cookie alone, which only the revocation record can end.
type sessionChecker interface {
	SessionExists(ctx context.Context, id string) (bool, error)
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
	id := identity{user: user, sid: sid, exp: time.Unix(exp, 0)}
	return id, wellFormed(id)
}

func wellFormed(id identity) bool {
	return chat.ValidName(id.user) && id.sid != "" && time.Now().Before(id.exp)
}

// check confirms a well-formed identity against the cluster's logouts
// and, for a token with server-side sessions, the session store.
func (s *Server) check(ctx context.Context, id identity) error {
	if !s.revocations.Loaded() {
		return errRevocationsLoading
	}
	if s.revocations.Revoked(id.sid) {
		return errNoSession
	}
	if id.token && s.checker != nil {
		ok, err := s.checker.SessionExists(ctx, s.storeKey(id.sid))
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
// token, and, when query is set (for /ws, where browsers cannot set
// headers), ?token=. The first that checks out wins. On failure the
// error says why (errNoSession, errRevocationsLoading, errSessionStore),
// and the identity is the last well-formed one seen, if any (logout
// revokes it regardless).
func (s *Server) authenticate(r *http.Request, query bool) (identity, error) {
	var cands []identity
	if id, ok := s.sessionIdentity(r); ok {
		cands = append(cands, id)
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if id, ok := s.parseToken(strings.TrimSpace(tok)); ok {
			cands = append(cands, id)
		}
	}
	if query {
		if tok := r.URL.Query().Get("token"); tok != "" {
			if id, ok := s.parseToken(tok); ok {
				cands = append(cands, id)
			}
		}
	}
	err := errNoSession
	var last identity
	for _, id := range cands {
		e := s.check(r.Context(), id)
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
// "user|sid|exp" and mac its HMAC-SHA256 under TokenKey.

func (s *Server) makeToken(id identity) string {
	exp := time.Now().Add(s.cfg.TokenTTL)
	if id.exp.Before(exp) {
		exp = id.exp
	}
	payload := id.user + "|" + id.sid + "|" + strconv.FormatInt(exp.Unix(), 10)
	mac := hmac.New(sha256.New, s.tokenKey)
	mac.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (s *Server) parseToken(tok string) (identity, bool) {
	p64, m64, ok := strings.Cut(tok, ".")
	if !ok || len(tok) > 512 {
		return identity{}, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return identity{}, false
	}
	mac := hmac.New(sha256.New, s.tokenKey)
	mac.Write(payload)
	if !hmac.Equal(sum, mac.Sum(nil)) {
		return identity{}, false
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != 3 {
		return identity{}, false
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return identity{}, false
	}
	id := identity{user: parts[0], sid: parts[1], exp: time.Unix(exp, 0), token: true}
	return id, wellFormed(id)
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

// loginName reads the name from a JSON body or a form.
func loginName(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLoginBody))
	if err != nil {
		return "", false
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '{' {
		var v struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(t, &v); err != nil {
			return "", false
		}
		return v.Name, true
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", false
	}
	return form.Get("name"), true
}

// loginFailed answers a refused login and counts it under code.
func (s *Server) loginFailed(w http.ResponseWriter, status int, code, message string) {
	s.CountLogin(code)
	writeError(w, status, code, message)
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		s.loginFailed(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	name, ok := loginName(w, r)
	if !ok {
		s.loginFailed(w, http.StatusBadRequest, CodeBadRequest, "body must be JSON {\"name\":...} or a form with name")
		return
	}
	if !chat.ValidName(name) {
		s.loginFailed(w, http.StatusBadRequest, CodeBadName, "name must be 1-32 letters, digits, '_', '.' or '-'")
		return
	}
	sess, _ := s.sessions.New(r, CookieName) // a bad cookie yields a fresh session
	if old, _ := sess.Values[keySID].(string); old != "" {
		// A login replaces whatever session the browser had.
		exp, _ := sess.Values[keyExp].(int64)
		if err := s.revocations.Revoke(r.Context(), old, time.Unix(exp, 0)); err != nil {
			s.log.Warn("revoking replaced session", "err", err)
		}
	}
	// A fresh id: a session id known before login is worthless after it.
	sess.IsNew = true
	sess.Values = map[any]any{}
	cookieOptions(sess, r)
	id := identity{user: name, sid: newSessionID(), exp: time.Now().Add(time.Duration(sess.Options.MaxAge) * time.Second)}
	sess.ID = ""
	if s.checker != nil {
		// Server-side sessions are stored under a key derived from sid,
		// so that tokens can be checked against the store.
		sess.ID = s.storeKey(id.sid)
	}
	sess.Values[keyUser] = id.user
	sess.Values[keySID] = id.sid
	sess.Values[keyExp] = id.exp.Unix()
	if err := sess.Save(r, w); err != nil {
		s.log.Error("saving session", "err", err)
		s.loginFailed(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot store the session right now")
		return
	}
	setHint(w, sess.Options)
	s.CountLogin(LoginOK)
	writeJSON(w, http.StatusOK, map[string]string{"user": name, "node": s.node, "token": s.makeToken(id)})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	// A well-formed session is revoked even when this node cannot tell
	// yet whether it already was.
	if id, _ := s.authenticate(r, false); id.sid != "" {
		if err := s.revocations.Revoke(r.Context(), id.sid, id.exp); err != nil {
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
	writeJSON(w, http.StatusOK, map[string]string{"user": id.user, "node": s.node})
}
