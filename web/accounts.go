package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/store"
)

// AuthMode is how users prove who they are.
type AuthMode string

// The auth modes (--auth).
const (
	// AuthPassword: accounts with passwords (register, then log in).
	AuthPassword AuthMode = "password"
	// AuthOpen: a bare name logs in, as in v1. For demos and benchmarks.
	AuthOpen AuthMode = "open"
	// AuthJWT: the app meshchat is embedded in logs users in with a JWT
	// it signs (Config.JWTKey); the token's sub is the user.
	AuthJWT AuthMode = "jwt"
)

// ParseAuthMode checks an --auth value; "" is AuthPassword.
func ParseAuthMode(s string) (AuthMode, error) {
	switch m := AuthMode(s); m {
	case "":
		return AuthPassword, nil
	case AuthPassword, AuthOpen, AuthJWT:
		return m, nil
	}
	return "", errors.New(`web: auth mode must be "password", "open" or "jwt"`)
}

// Accounts is the cluster's table of accounts and bans (store.Accounts),
// as the server uses it.
type Accounts interface {
	// Loaded reports whether the table is loaded; until it is, sessions
	// cannot be checked and are refused with 503.
	Loaded() bool
	Lookup(name string) (store.Account, bool)
	Register(ctx context.Context, name, password, display string) (store.Account, error)
	Authenticate(ctx context.Context, name, password string) (store.Account, error)
	ChangePassword(ctx context.Context, name, old, password string) (store.Account, error)
	LogoutAll(ctx context.Context, name string) error
	SetBanned(ctx context.Context, name string, banned bool) error
}

// AuthLimits bound login, registration and password attempts per client
// address and per name, on each node. Zero values mean the defaults.
type AuthLimits struct {
	// AttemptsPerMinute and AttemptBurst bound every attempt (login,
	// registration, password change) from one address. Default 30 and 30.
	AttemptsPerMinute, AttemptBurst float64
	// FailuresPerMinute and FailureBurst bound failed logins of one name
	// from one address. Default 6 and 10.
	FailuresPerMinute, FailureBurst float64
	// NameFailuresPerMinute and NameFailureBurst bound failed logins of
	// one name from all addresses together, so that guessing from many
	// addresses is slow too. Default 30 and 100: generous, so that an
	// attacker's failures hardly lock the real user out.
	NameFailuresPerMinute, NameFailureBurst float64
	// RegistrationsPerMinute and RegistrationBurst bound new accounts
	// from one address. Default 2 and 10.
	RegistrationsPerMinute, RegistrationBurst float64
}

func (l AuthLimits) withDefaults() AuthLimits {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.AttemptsPerMinute, 30)
	def(&l.AttemptBurst, 30)
	def(&l.FailuresPerMinute, 6)
	def(&l.FailureBurst, 10)
	def(&l.NameFailuresPerMinute, 30)
	def(&l.NameFailureBurst, 100)
	def(&l.RegistrationsPerMinute, 2)
	def(&l.RegistrationBurst, 10)
	return l
}

// limiters are a server's throttles of AuthLimits.
type limiters struct {
	attempts, failures, nameFailures, registrations *throttle
}

func newLimiters(l AuthLimits) limiters {
	l = l.withDefaults()
	return limiters{
		attempts:      newThrottle(l.AttemptsPerMinute, l.AttemptBurst),
		failures:      newThrottle(l.FailuresPerMinute, l.FailureBurst),
		nameFailures:  newThrottle(l.NameFailuresPerMinute, l.NameFailureBurst),
		registrations: newThrottle(l.RegistrationsPerMinute, l.RegistrationBurst),
	}
}

// credentials is what the account endpoints read, from JSON or a form.
type credentials struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Display  string `json:"display"`
	Token    string `json:"token"`
	Old      string `json:"old"`
	New      string `json:"new"`
	User     string `json:"user"`
}

// readCredentials reads a JSON body or a form into c.
func readCredentials(w http.ResponseWriter, r *http.Request) (credentials, bool) {
	var c credentials
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLoginBody))
	if err != nil {
		return c, false
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '{' {
		return c, json.Unmarshal(t, &c) == nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return c, false
	}
	c = credentials{Name: form.Get("name"), Password: form.Get("password"), Display: form.Get("display"),
		Token: form.Get("token"), Old: form.Get("old"), New: form.Get("new"), User: form.Get("user")}
	return c, true
}

// begin runs the checks every account endpoint starts with: origin, the
// per-address attempt limit, the body. When one fails it answers the
// request itself and returns the error code it answered with.
func (s *Server) begin(w http.ResponseWriter, r *http.Request) (credentials, string) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return credentials{}, CodeForbiddenOrigin
	}
	if ok, retry := s.limits.attempts.take(clientAddr(r), time.Now()); !ok {
		tooMany(w, retry, "too many attempts from this address; retry later")
		return credentials{}, CodeTooManyAttempts
	}
	c, ok := readCredentials(w, r)
	if !ok {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "body must be a JSON object or a form")
		return c, CodeBadRequest
	}
	return c, ""
}

func (s *Server) handleAuthMode(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"mode": s.mode})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	c, code := s.begin(w, r)
	if code != "" {
		s.CountLogin(code)
		return
	}
	name := c.Name
	if s.mode == AuthJWT {
		claims, err := verifyJWT(c.Token, s.cfg.JWTKey, time.Now())
		if err != nil {
			s.loginFailed(w, http.StatusUnauthorized, CodeBadCredentials, "token refused: "+err.Error())
			return
		}
		name = claims.Sub
	}
	if !chat.ValidName(name) {
		s.loginFailed(w, http.StatusBadRequest, CodeBadName, "name must be 1-32 letters, digits, '_', '.' or '-'")
		return
	}
	if s.mode == AuthPassword {
		if _, code := s.checkPassword(w, r, name, func(ctx context.Context) (store.Account, error) {
			return s.accounts.Authenticate(ctx, name, c.Password)
		}); code != "" {
			s.CountLogin(code)
			return
		}
	}
	if s.banned(name) {
		s.loginFailed(w, http.StatusForbidden, CodeBanned, "this user is banned")
		return
	}
	s.loggedIn(w, r, name)
}

// checkPassword runs check (a password check of name) under the failure
// limits. When it fails it answers the request itself and returns the
// error code it answered with.
func (s *Server) checkPassword(w http.ResponseWriter, r *http.Request, name string,
	check func(context.Context) (store.Account, error)) (store.Account, string) {
	now, pair := time.Now(), name+"|"+clientAddr(r)
	if ok, retry := s.limits.failures.check(pair, now); !ok {
		tooMany(w, retry, "too many failed logins; retry later")
		return store.Account{}, CodeTooManyAttempts
	}
	if ok, retry := s.limits.nameFailures.check(name, now); !ok {
		tooMany(w, retry, "too many failed logins; retry later")
		return store.Account{}, CodeTooManyAttempts
	}
	acc, err := check(r.Context())
	if err != nil {
		if errors.Is(err, store.ErrBadCredentials) {
			s.limits.failures.take(pair, now)
			s.limits.nameFailures.take(name, now)
			s.logSession("login failed", "user", name, "addr", clientAddr(r))
		}
		return store.Account{}, s.accountError(w, err)
	}
	return acc, ""
}

// parseAnyToken reads a bearer token: one of ours, or under --auth jwt
// one of the app's (a JWT has two dots, ours one). An app token's
// session id is derived from the token itself, so logging it out
// revokes that token.
func (s *Server) parseAnyToken(tok string) (identity, bool) {
	if id, ok := s.parseToken(tok); ok || s.mode != AuthJWT {
		return id, ok
	}
	claims, err := verifyJWT(tok, s.cfg.JWTKey, time.Now())
	if err != nil || !chat.ValidName(claims.Sub) {
		return identity{}, false
	}
	sum := sha256.Sum256([]byte(tok))
	issued := time.Now()
	if claims.Iat != nil {
		issued = time.Unix(*claims.Iat, 0)
	}
	id := identity{user: claims.Sub, sid: "jwt-" + hex.EncodeToString(sum[:16]), issued: issued,
		exp: time.Unix(*claims.Exp, 0).Add(jwtSkew), token: true}
	return id, wellFormed(id)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if s.mode != AuthPassword {
		writeError(w, http.StatusForbidden, CodeForbidden, "registration is off: this cluster runs --auth "+string(s.mode))
		return
	}
	c, code := s.begin(w, r)
	if code != "" {
		return
	}
	if !chat.ValidName(c.Name) {
		writeError(w, http.StatusBadRequest, CodeBadName, "name must be 1-32 letters, digits, '_', '.' or '-'")
		return
	}
	if ok, retry := s.limits.registrations.take(clientAddr(r), time.Now()); !ok {
		tooMany(w, retry, "too many new accounts from this address; retry later")
		return
	}
	if _, err := s.accounts.Register(r.Context(), c.Name, c.Password, c.Display); err != nil {
		s.accountError(w, err)
		return
	}
	s.logSession("registered", "user", c.Name, "addr", clientAddr(r))
	s.loggedIn(w, r, c.Name)
}

// handlePassword changes the session user's password. Every other
// session of the user ends; this one is replaced by a new one.
func (s *Server) handlePassword(w http.ResponseWriter, r *http.Request) {
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "log in first")
		return
	}
	if s.mode != AuthPassword {
		writeError(w, http.StatusForbidden, CodeForbidden, "passwords are off: this cluster runs --auth "+string(s.mode))
		return
	}
	c, code := s.begin(w, r)
	if code != "" {
		return
	}
	if _, code := s.checkPassword(w, r, id.user, func(ctx context.Context) (store.Account, error) {
		return s.accounts.ChangePassword(ctx, id.user, c.Old, c.New)
	}); code != "" {
		return
	}
	s.loggedIn(w, r, id.user)
}

// handleLogoutAll ends every session of the user, on every node.
func (s *Server) handleLogoutAll(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, CodeForbiddenOrigin, "origin not allowed")
		return
	}
	id, err := s.authenticate(r, false)
	if err != nil {
		authFailed(w, err, "log in first")
		return
	}
	if err := s.accounts.LogoutAll(r.Context(), id.user); err != nil {
		s.accountError(w, err)
		return
	}
	s.handleLogout(w, r)
}

// handleBan bans (or, with ban false, unbans) a user: an admin's session
// or the API key only.
func (s *Server) handleBan(ban bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		by, user, ok := s.adminAction(w, r)
		if !ok {
			return
		}
		if err := s.accounts.SetBanned(r.Context(), user, ban); err != nil {
			s.accountError(w, err)
			return
		}
		s.log.Info("ban", "user", user, "banned", ban, "by", by)
		w.WriteHeader(http.StatusNoContent)
	}
}

// banned reports whether user is banned.
func (s *Server) banned(user string) bool {
	acc, ok := s.accounts.Lookup(user)
	return ok && acc.Banned
}

// checkAccount confirms a session against the user's account: not
// banned, not issued before a password change or "log out everywhere",
// and under --auth password, issued to an account that exists (a
// session of a name that was registered again, after the accounts were
// lost, is not that account's).
func (s *Server) checkAccount(id identity) error {
	if !s.accounts.Loaded() {
		return errRevocationsLoading
	}
	acc, ok := s.accounts.Lookup(id.user)
	switch {
	case ok && acc.Banned:
		return errBanned
	case ok && id.issued.UnixMilli() < acc.ValidAfter:
		return errNoSession
	case s.mode == AuthPassword && (!ok || !acc.Registered() || id.issued.UnixMilli() < acc.Created):
		return errNoSession
	}
	return nil
}

// accountError answers a failed account operation and returns the code
// it answered with.
func (s *Server) accountError(w http.ResponseWriter, err error) string {
	status, code, msg := http.StatusServiceUnavailable, CodeUnavailable, "cannot reach the accounts right now, retry"
	switch {
	case errors.Is(err, store.ErrBadCredentials):
		status, code, msg = http.StatusUnauthorized, CodeBadCredentials, "wrong name or password"
	case errors.Is(err, store.ErrNameTaken):
		status, code, msg = http.StatusConflict, CodeNameTaken, "this name is taken"
	case errors.Is(err, store.ErrWeakPassword):
		status, code, msg = http.StatusBadRequest, CodeWeakPassword, "a password needs at least 8 characters"
	case errors.Is(err, store.ErrPasswordTooLong):
		status, code, msg = http.StatusBadRequest, CodeWeakPassword, "a password may have at most 1024 bytes"
	case errors.Is(err, store.ErrDisplayTooLong):
		status, code, msg = http.StatusBadRequest, CodeBadRequest, "a display name may have at most 64 bytes"
	case errors.Is(err, store.ErrAccountsFull):
		code, msg = CodeAccountsFull, "this cluster takes no more accounts"
	case errors.Is(err, store.ErrAccountsLoading):
		msg = "this node is still loading accounts; retry shortly or use another node"
	default:
		s.log.Warn("account operation", "err", err)
	}
	writeError(w, status, code, msg)
	return code
}

// noAccounts stands in for a missing account table under --auth open or
// jwt: nobody is banned, and nothing can be changed.
type noAccounts struct{}

func (noAccounts) Loaded() bool                            { return true }
func (noAccounts) Lookup(string) (store.Account, bool)     { return store.Account{}, false }
func (noAccounts) LogoutAll(context.Context, string) error { return errAccountsOff }
func (noAccounts) SetBanned(context.Context, string, bool) error {
	return errAccountsOff
}
func (noAccounts) Register(context.Context, string, string, string) (store.Account, error) {
	return store.Account{}, errAccountsOff
}
func (noAccounts) Authenticate(context.Context, string, string) (store.Account, error) {
	return store.Account{}, errAccountsOff
}
func (noAccounts) ChangePassword(context.Context, string, string, string) (store.Account, error) {
	return store.Account{}, errAccountsOff
}

// sessionLogsPerSecond bounds the lines about logins, connects and
// disconnects logged a second: one a connection is useful, a flood of
// them (reconnect storms, guessing) must not flood the log.
const sessionLogsPerSecond = 20

// logSession logs a login, connect or disconnect at info, at most
// sessionLogsPerSecond a second; the next line logged says how many were
// not.
func (s *Server) logSession(msg string, args ...any) {
	dropped, ok := s.sessionLog.Allow(time.Now())
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "not_logged_since", dropped)
	}
	s.log.Info(msg, args...)
}
