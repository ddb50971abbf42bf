package web

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/web/webtest"
)

func passwordEnv(t *testing.T, mod func(*Config)) *env {
	return newEnv(t, envOpts{web: func(c *Config) {
		c.Auth = AuthPassword
		c.Admins = []string{"root"}
		if mod != nil {
			mod(c)
		}
	}})
}

// errCode posts body to path with c and returns the status and the error
// code of the answer ("" for none).
func (e *env) errCode(c *http.Client, path, body string) (int, string) {
	e.t.Helper()
	var b errorBody
	resp := e.do(c, "POST", path, body, nil, &b)
	return resp.StatusCode, b.Error.Code
}

func (e *env) register(name, password string) *http.Client {
	e.t.Helper()
	c := newClient(e.t)
	var a loginAnswer
	resp := e.do(c, "POST", "/api/register", fmt.Sprintf(`{"name":%q,"password":%q}`, name, password), nil, &a)
	if resp.StatusCode != 200 || a.User != name || a.Token == "" {
		e.t.Fatalf("register %s: %d %+v", name, resp.StatusCode, a)
	}
	return c
}

func (e *env) me(c *http.Client) (int, string) {
	e.t.Helper()
	var b struct {
		User  string
		Error struct{ Code string }
	}
	resp := e.do(c, "GET", "/api/me", "", nil, &b)
	return resp.StatusCode, b.User + b.Error.Code
}

func TestRegisterAndLogin(t *testing.T) {
	e := passwordEnv(t, nil)
	alice := e.register("alice", "correct horse")
	if st, who := e.me(alice); st != 200 || who != "alice" {
		t.Fatalf("me after register: %d %s", st, who)
	}
	anon := newClient(t)
	for _, c := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/api/register", `{"name":"alice","password":"another one"}`, 409, CodeNameTaken},
		{"/api/register", `{"name":"bob","password":"short"}`, 400, CodeWeakPassword},
		{"/api/register", `{"name":"bad name!","password":"long enough"}`, 400, CodeBadName},
		{"/api/register", `{"name":`, 400, CodeBadRequest},
		{"/api/login", `{"name":"alice","password":"wrong horse"}`, 401, CodeBadCredentials},
		{"/api/login", `{"name":"nobody","password":"correct horse"}`, 401, CodeBadCredentials},
		{"/api/login", `{"name":"alice"}`, 401, CodeBadCredentials}, // a name alone never logs in
		{"/api/login", `{"name":"b@d","password":"x"}`, 400, CodeBadName},
	} {
		if st, code := e.errCode(anon, c.path, c.body); st != c.status || code != c.code {
			t.Errorf("%s %s: %d %q, want %d %q", c.path, c.body, st, code, c.status, c.code)
		}
	}
	// One message for an unknown name and a wrong password.
	var a, b errorBody
	e.do(anon, "POST", "/api/login", `{"name":"alice","password":"wrong horse"}`, nil, &a)
	e.do(anon, "POST", "/api/login", `{"name":"nobody","password":"wrong horse"}`, nil, &b)
	if a != b {
		t.Fatalf("unknown name %+v and wrong password %+v answered differently", b, a)
	}
	var ok loginAnswer
	if resp := e.do(newClient(t), "POST", "/api/login", `{"name":"alice","password":"correct horse"}`, nil, &ok); resp.StatusCode != 200 || ok.User != "alice" {
		t.Fatalf("login: %d %+v", resp.StatusCode, ok)
	}
	// A form works as well as JSON (the UI may post one).
	resp := e.do(newClient(t), "POST", "/api/login", "name=alice&password=correct+horse",
		hdr("Content-Type", "application/x-www-form-urlencoded"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("form login: %d", resp.StatusCode)
	}
}

// Failed logins of one name from one address are throttled with 429 and
// Retry-After; the right password from there waits too, and other names
// are not affected.
func TestLoginThrottled(t *testing.T) {
	e := passwordEnv(t, func(c *Config) {
		c.AuthLimits.FailuresPerMinute, c.AuthLimits.FailureBurst = 0.01, 3
	})
	e.register("alice", "correct horse")
	e.register("bob", "correct horse")
	anon := newClient(t)
	for range 3 {
		if st, code := e.errCode(anon, "/api/login", `{"name":"alice","password":"guess"}`); st != 401 {
			t.Fatalf("guess: %d %s", st, code)
		}
	}
	resp := e.do(anon, "POST", "/api/login", `{"name":"alice","password":"correct horse"}`, nil, nil)
	if resp.StatusCode != 429 {
		t.Fatalf("fourth attempt: %d, want 429", resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if st, code := e.errCode(anon, "/api/login", `{"name":"alice","password":"guess"}`); st != 429 || code != CodeTooManyAttempts {
		t.Fatalf("throttled: %d %s", st, code)
	}
	if st, _ := e.errCode(anon, "/api/login", `{"name":"bob","password":"correct horse"}`); st != 200 {
		t.Fatalf("bob throttled by alice's guesses: %d", st)
	}
}

func TestRegistrationThrottledPerAddress(t *testing.T) {
	e := passwordEnv(t, func(c *Config) {
		c.AuthLimits.RegistrationsPerMinute, c.AuthLimits.RegistrationBurst = 0.01, 2
	})
	e.register("u1", "long enough")
	e.register("u2", "long enough")
	if st, code := e.errCode(newClient(t), "/api/register", `{"name":"u3","password":"long enough"}`); st != 429 || code != CodeTooManyAttempts {
		t.Fatalf("third registration: %d %s", st, code)
	}
}

// A password change ends the user's other sessions (and their sockets)
// and hands the changer a new one.
func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	e := passwordEnv(t, nil)
	first := e.register("alice", "first password")
	other := newClient(t)
	e.do(other, "POST", "/api/login", `{"name":"alice","password":"first password"}`, nil, nil)
	ws := e.connect("alice", other)
	time.Sleep(2 * time.Millisecond) // the change must be issued after the sessions
	if st, code := e.errCode(first, "/api/password", `{"old":"wrong password","new":"second password"}`); st != 401 || code != CodeBadCredentials {
		t.Fatalf("change with a wrong old password: %d %s", st, code)
	}
	if st, code := e.errCode(first, "/api/password", `{"old":"first password","new":"short"}`); st != 400 || code != CodeWeakPassword {
		t.Fatalf("change to a weak password: %d %s", st, code)
	}
	if st, _ := e.errCode(first, "/api/password", `{"old":"first password","new":"second password"}`); st != 200 {
		t.Fatalf("change: %d", st)
	}
	if code := ws.Closed(waitFor); code != chat.CloseLoggedOut {
		t.Fatalf("other session's socket closed with %d, want %d", code, chat.CloseLoggedOut)
	}
	if st, _ := e.me(other); st != 401 {
		t.Fatalf("other session after the change: %d, want 401", st)
	}
	if st, who := e.me(first); st != 200 || who != "alice" {
		t.Fatalf("changer's new session: %d %s", st, who)
	}
	if st, _ := e.errCode(newClient(t), "/api/login", `{"name":"alice","password":"second password"}`); st != 200 {
		t.Fatalf("login with the new password: %d", st)
	}
}

func TestLogoutEverywhere(t *testing.T) {
	e := passwordEnv(t, nil)
	a := e.register("alice", "correct horse")
	b := newClient(t)
	e.do(b, "POST", "/api/login", `{"name":"alice","password":"correct horse"}`, nil, nil)
	ws := e.connect("alice", b)
	time.Sleep(2 * time.Millisecond)
	if resp := e.do(a, "POST", "/api/logout-all", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout-all: %d", resp.StatusCode)
	}
	if code := ws.Closed(waitFor); code != chat.CloseLoggedOut {
		t.Fatalf("socket closed with %d", code)
	}
	for _, c := range []*http.Client{a, b} {
		if st, _ := e.me(c); st != 401 {
			t.Fatalf("a session after logout-all: %d", st)
		}
	}
	if st, _ := e.errCode(newClient(t), "/api/login", `{"name":"alice","password":"correct horse"}`); st != 200 {
		t.Fatalf("login after logout-all: %d", st)
	}
}

func TestBan(t *testing.T) {
	e := passwordEnv(t, nil)
	root := e.register("root", "root password")
	bob := e.register("bob", "bob password")
	carol := e.register("carol", "carol password")
	ws := e.connect("bob", bob)

	if st, code := e.errCode(newClient(t), "/api/admin/ban", `{"user":"bob"}`); st != 401 {
		t.Fatalf("ban without a session: %d %s", st, code)
	}
	if st, code := e.errCode(carol, "/api/admin/ban", `{"user":"bob"}`); st != 403 || code != CodeForbidden {
		t.Fatalf("ban by a non-admin: %d %s", st, code)
	}
	if st, code := e.errCode(root, "/api/admin/ban", `{"user":"no good!"}`); st != 400 || code != CodeBadName {
		t.Fatalf("ban of a bad name: %d %s", st, code)
	}
	if resp := e.do(root, "POST", "/api/admin/ban", `{"user":"bob"}`, nil, nil); resp.StatusCode != 204 {
		t.Fatalf("ban: %d", resp.StatusCode)
	}
	if code := ws.Closed(waitFor); code != chat.CloseBanned {
		t.Fatalf("banned user's socket closed with %d, want %d", code, chat.CloseBanned)
	}
	if st, code := e.me(bob); st != 403 || code != CodeBanned {
		t.Fatalf("banned user's session: %d %s", st, code)
	}
	if st, code := e.errCode(newClient(t), "/api/login", `{"name":"bob","password":"bob password"}`); st != 403 || code != CodeBanned {
		t.Fatalf("banned user's login: %d %s", st, code)
	}
	if _, resp, err := e.dial(bob, "", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("banned user's WebSocket: %v %v", resp, err)
	}
	if resp := e.do(root, "POST", "/api/admin/unban", `{"user":"bob"}`, nil, nil); resp.StatusCode != 204 {
		t.Fatalf("unban: %d", resp.StatusCode)
	}
	if st, _ := e.errCode(newClient(t), "/api/login", `{"name":"bob","password":"bob password"}`); st != 200 {
		t.Fatalf("login after unban: %d", st)
	}
	var me struct{ Admin bool }
	e.do(root, "GET", "/api/me", "", nil, &me)
	if !me.Admin {
		t.Fatal("/api/me does not say root is an admin")
	}
}

// Sessions made before accounts existed (no issue time) and v1 tokens are
// refused cleanly: 401, the page logs in again.
func TestSessionsFromBeforeAccountsAreLoggedOut(t *testing.T) {
	e := passwordEnv(t, nil)
	e.register("alice", "correct horse")
	req := httptest.NewRequest("GET", "/", nil)
	rec := httptest.NewRecorder()
	sess, _ := e.srv.sessions.New(req, CookieName)
	sess.Values = map[any]any{keyUser: "alice", keySID: "old-session", keyExp: time.Now().Add(time.Hour).Unix()}
	if err := sess.Save(req, rec); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	c.Jar.SetCookies(mustURL(e.ts.URL), rec.Result().Cookies())
	if st, _ := e.me(c); st != 401 {
		t.Fatalf("v1 session: %d, want 401", st)
	}
	payload := "alice|old-session|" + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	mac := hmac.New(sha256.New, []byte("token-key"))
	mac.Write([]byte(payload))
	v1 := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	if resp := e.do(newClient(t), "GET", "/api/me", "", hdr("Authorization", "Bearer "+v1), nil); resp.StatusCode != 401 {
		t.Fatalf("v1 token: %d, want 401", resp.StatusCode)
	}
}

func TestOpenModeHasNoRegistration(t *testing.T) {
	e := newEnv(t, envOpts{})
	if st, code := e.errCode(newClient(t), "/api/register", `{"name":"alice","password":"long enough"}`); st != 403 || code != CodeForbidden {
		t.Fatalf("register under --auth open: %d %s", st, code)
	}
	var m struct{ Mode string }
	e.do(newClient(t), "GET", "/api/auth", "", nil, &m)
	if m.Mode != "open" {
		t.Fatalf("/api/auth mode %q", m.Mode)
	}
}

func TestJWTLogin(t *testing.T) {
	key := []byte("the app's signing key")
	e := newEnv(t, envOpts{web: func(c *Config) { c.Auth = AuthJWT; c.JWTKey = JWTKey{HMAC: key} }})
	exp := time.Now().Add(time.Hour).Unix()
	good := webtest.SignHS256(key, map[string]any{"sub": "alice", "exp": exp, "name": "Alice"})
	var a loginAnswer
	c := newClient(t)
	if resp := e.do(c, "POST", "/api/login", fmt.Sprintf(`{"token":%q}`, good), nil, &a); resp.StatusCode != 200 || a.User != "alice" {
		t.Fatalf("login with a good token: %d %+v", resp.StatusCode, a)
	}
	for name, tok := range map[string]string{
		"expired":     webtest.SignHS256(key, map[string]any{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}),
		"other key":   webtest.SignHS256([]byte("another key"), map[string]any{"sub": "alice", "exp": exp}),
		"no exp":      webtest.SignHS256(key, map[string]any{"sub": "alice"}),
		"alg none":    webtest.SignJWT("none", map[string]any{"sub": "alice", "exp": exp}, func([]byte) []byte { return nil }),
		"not a token": "abc",
		"name only":   "",
	} {
		body := fmt.Sprintf(`{"token":%q}`, tok)
		if tok == "" {
			body = `{"name":"alice"}`
		}
		if st, code := e.errCode(newClient(t), "/api/login", body); st != 401 || code != CodeBadCredentials {
			t.Errorf("%s: %d %s, want 401", name, st, code)
		}
	}
	// The app's token works on /ws directly.
	conn := webtestDial(t, e, "token="+good)
	if f := conn.ExpectNext("welcome", waitFor); f.Str("user") != "alice" {
		t.Fatalf("welcome %+v", f)
	}
	// A token skewed a little past exp still works; much more does not.
	skewed := webtest.SignHS256(key, map[string]any{"sub": "bob", "exp": time.Now().Add(-10 * time.Second).Unix()})
	if st, _ := e.errCode(newClient(t), "/api/login", fmt.Sprintf(`{"token":%q}`, skewed)); st != 200 {
		t.Fatalf("token 10s past exp: %d, want 200 (clock skew)", st)
	}
}

func TestJWTPublicKeys(t *testing.T) {
	now := time.Now()
	claims := map[string]any{"sub": "alice", "exp": now.Add(time.Hour).Unix()}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemOf := func(pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	rs := webtest.SignJWT("RS256", claims, func(b []byte) []byte {
		d := sha256.Sum256(b)
		s, _ := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, d[:])
		return s
	})
	es := webtest.SignJWT("ES256", claims, func(b []byte) []byte {
		d := sha256.Sum256(b)
		r, s, _ := ecdsa.Sign(rand.Reader, ek, d[:])
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	})
	rsaKey, err := ParseJWTKey(pemOf(&rk.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ParseJWTKey(pemOf(&ek.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tok  string
		key  JWTKey
		ok   bool
	}{
		{"RS256", rs, rsaKey, true},
		{"ES256", es, ecKey, true},
		{"RS256 token, EC key", rs, ecKey, false},
		{"ES256 token, RSA key", es, rsaKey, false},
		// Algorithm confusion: an HS256 token keyed with the public key's
		// PEM must not pass a public key.
		{"HS256 with the PEM as secret", webtest.SignHS256([]byte(pemOf(&rk.PublicKey)), claims), rsaKey, false},
	} {
		_, err := verifyJWT(c.tok, c.key, now)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, err, c.ok)
		}
	}
	if k, err := ParseJWTKey("plain secret"); err != nil || string(k.HMAC) != "plain secret" {
		t.Fatalf("HMAC key: %+v %v", k, err)
	}
	if _, err := ParseJWTKey("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"); err == nil {
		t.Fatalf("bad PEM: %v", err)
	}
}

// webtestDial opens /ws with query and no cookies.
func webtestDial(t *testing.T, e *env, query string) *webtest.Conn {
	t.Helper()
	ws, resp, err := e.dial(nil, query, nil)
	if err != nil {
		t.Fatalf("dial ?%s: %v %v", query, resp, err)
	}
	return webtest.Wrap(t, ws)
}

// Logins, connects and disconnects are logged at info, the disconnect
// with its close code; a flood of them is cut to a few lines a second,
// and the next line says how many were left out.
func TestSessionLogs(t *testing.T) {
	var buf clustertest.Buffer
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	}})
	c, _ := e.login("alice")
	ws := e.connect("alice", c)
	if resp := e.do(c, "POST", "/api/logout", "", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	ws.Closed(waitFor)
	clustertest.WaitFor(t, waitFor, "the disconnect line", func() bool {
		return strings.Contains(buf.String(), "msg=disconnect component=web user=alice code=4001")
	})
	for _, want := range []string{"msg=login component=web user=alice", "msg=connect component=web user=alice"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, buf.String())
		}
	}
	for i := range 3 * sessionLogsPerSecond {
		e.login(fmt.Sprintf("u%d", i))
	}
	if n := strings.Count(buf.String(), "msg=login"); n > 2*sessionLogsPerSecond+1 {
		t.Fatalf("%d login lines for %d logins: not limited", n, 3*sessionLogsPerSecond+1)
	}
}
