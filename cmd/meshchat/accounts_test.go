package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// startAccountCluster runs three processes of --auth password (root is
// an admin) joined through the first, with extra flags, and waits until
// all are ready and see each other.
func startAccountCluster(t *testing.T, extra ...string) []*proc {
	t.Helper()
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	// Every test client comes from 127.0.0.1: one address, many users.
	extra = append([]string{"--auth", "password", "--admins", "root", "--login-limit", "10000", "--register-limit", "10000"}, extra...)
	p1 := startProc(t, "a1", "", extra...)
	waitProcsReady(t, p1)
	procs := []*proc{p1, startProc(t, "a2", p1.gossip, extra...), startProc(t, "a3", p1.gossip, extra...)}
	waitProcsReady(t, procs...)
	return procs
}

// waitProcsReady waits until every process is ready and sees all of them
// alive.
func waitProcsReady(t *testing.T, procs ...*proc) {
	t.Helper()
	clustertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d processes ready and joined", len(procs)), func() bool {
		for _, p := range procs {
			if !p.Running() {
				t.Fatalf("%s exited: %v", p.name, p.Err())
			}
			if st, _ := webtest.Get(t, p.url+"/readyz", nil); st != http.StatusOK {
				return false
			}
			v, ok := webtest.GetCluster(t, p.url)
			if !ok || len(v.Nodes) != len(procs) {
				return false
			}
			for _, n := range v.Nodes {
				if n.State != "alive" {
					return false
				}
			}
		}
		return true
	})
}

// post sends a JSON body (with cookies, when given) and returns the
// status, the error code ("" for none) and the body.
func post(t *testing.T, url, body string, cookies []*http.Cookie) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error struct{ Code string } }
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code, string(b)
}

func TestAccountsContractMesh(t *testing.T) { accountsContract(t, startAccountCluster(t)) }

func TestAccountsContractRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes; skipped with -short")
	}
	srv := redistest.Start(t)
	accountsContract(t, startAccountCluster(t, "--broker", "redis", "--redis", srv.URL()))
}

// accountsContract checks the contract's "Accounts" section on a running
// three-node cluster.
func accountsContract(t *testing.T, procs []*proc) {
	a1, a2, a3 := procs[0].url, procs[1].url, procs[2].url

	// Two nodes asked for one name at the same moment: exactly one wins,
	// every time.
	for round := range 25 {
		body := fmt.Sprintf(`{"name":"race%d","password":"password %d"}`, round, round)
		var wg sync.WaitGroup
		status := make([]int, 2)
		codes := make([]string, 2)
		for i, base := range []string{a1, a2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status[i], codes[i], _ = post(t, base+"/api/register", body, nil)
			}()
		}
		wg.Wait()
		won := (status[0] == 200) != (status[1] == 200)
		lost := codes[0] == "name_taken" || codes[1] == "name_taken"
		if !won || !lost {
			t.Fatalf("round %d: answers %v %v; want one 200 and one 409 name_taken", round, status, codes)
		}
	}

	webtest.Register(t, a1, "alice", "alice's password")
	webtest.Register(t, a2, "root", "root's password")
	webtest.Register(t, a3, "bob", "bob's password")
	for _, c := range []struct {
		base, path, body string
		status           int
		code             string
	}{
		{a3, "/api/register", `{"name":"alice","password":"another password"}`, 409, "name_taken"},
		{a2, "/api/register", `{"name":"weak","password":"1234567"}`, 400, "weak_password"},
		{a3, "/api/login", `{"name":"alice","password":"wrong password"}`, 401, "bad_credentials"},
		{a3, "/api/login", `{"name":"nobody","password":"alice's password"}`, 401, "bad_credentials"},
		{a3, "/api/login", `{"name":"alice"}`, 401, "bad_credentials"},
	} {
		if st, code, body := post(t, c.base+c.path, c.body, nil); st != c.status || code != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.path, c.body, st, body, c.status, c.code)
		}
	}
	// Registered on a1, logs in on a3.
	alice := webtest.LoginPassword(t, a3, "alice", "alice's password")
	if st, body := webtest.Get(t, a2+"/api/me", alice.Cookies); st != 200 || !strings.Contains(string(body), `"alice"`) {
		t.Fatalf("alice's session on a2: %d %s", st, body)
	}

	// A ban closes the user's sockets on every node with 4003 and refuses
	// their logins; only an admin may ban.
	bob := webtest.LoginPassword(t, a2, "bob", "bob's password")
	bobWS := webtest.Dial(t, a2, bob, webtest.DialOptions{})
	if st, _, _ := post(t, a1+"/api/admin/ban", `{"user":"bob"}`, alice.Cookies); st != 403 {
		t.Fatalf("ban by a non-admin: %d", st)
	}
	root := webtest.LoginPassword(t, a1, "root", "root's password")
	if st, _, body := post(t, a1+"/api/admin/ban", `{"user":"bob"}`, root.Cookies); st != 204 {
		t.Fatalf("ban: %d %s", st, body)
	}
	if code := bobWS.Closed(10 * time.Second); code != chat.CloseBanned {
		t.Fatalf("banned user's socket on another node closed with %d, want %d", code, chat.CloseBanned)
	}
	clustertest.WaitFor(t, 10*time.Second, "bob's logins refused on every node", func() bool {
		for _, base := range []string{a1, a2, a3} {
			if st, code, _ := post(t, base+"/api/login", `{"name":"bob","password":"bob's password"}`, nil); st != 403 || code != "banned" {
				return false
			}
		}
		return true
	})
	if st, _, _ := post(t, a3+"/api/admin/unban", `{"user":"bob"}`, root.Cookies); st != 204 {
		t.Fatalf("unban: %d", st)
	}
	clustertest.WaitFor(t, 10*time.Second, "bob logs in again", func() bool {
		st, _, _ := post(t, a1+"/api/login", `{"name":"bob","password":"bob's password"}`, nil)
		return st == 200
	})
}

// The impersonation that accounts exist to stop: alice DMs bob a secret;
// a stranger tries every way in as bob without bob's password, on every
// node, and reads nothing.
func TestImpersonationImpossible(t *testing.T) {
	procs := startAccountCluster(t)
	a1, a2, a3 := procs[0].url, procs[1].url, procs[2].url
	const secret = "wifi password is hunter2"

	alice := webtest.Register(t, a1, "alice", "alice's password")
	bob := webtest.Register(t, a2, "bob", "bob's password")
	aws := webtest.Dial(t, a1, alice, webtest.DialOptions{})
	bws := webtest.Dial(t, a2, bob, webtest.DialOptions{})
	aws.Send(map[string]string{"type": "dm", "to": "bob", "text": secret, "ref": "d1"})
	bws.Expect("dm", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == secret })

	leaked := func(what, body string) {
		t.Helper()
		if strings.Contains(body, "hunter2") {
			t.Fatalf("%s leaked the DM: %s", what, body)
		}
	}
	// Logging in or registering as bob without his password.
	for _, base := range []string{a1, a2, a3} {
		for _, body := range []string{
			`{"name":"bob"}`,
			`{"name":"bob","password":""}`,
			`{"name":"bob","password":"alice's password"}`,
			`{"name":"bob","token":"x.y.z"}`,
		} {
			if st, _, resp := post(t, base+"/api/login", body, nil); st == 200 {
				t.Fatalf("login %s at %s: %d %s", body, base, st, resp)
			}
		}
		if st, _, _ := post(t, base+"/api/register", `{"name":"bob","password":"mallory's password"}`, nil); st != 409 {
			t.Fatalf("registering bob again at %s: %d", base, st)
		}
	}

	// Forged credentials: a cookie sealed under keys of the stranger's
	// choosing, a token with bob's name and a guessed MAC, alice's token
	// with the name changed.
	forged, err := securecookie.New(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32)).
		Encode("meshchat", map[any]any{"user": "bob", "sid": "x", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	payload := fmt.Sprintf("bob|x|%d|%d", time.Now().Add(time.Hour).Unix(), time.Now().UnixMilli())
	badToken := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	_, aliceMAC, _ := strings.Cut(alice.Token, ".")
	swapped := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + aliceMAC
	attempts := []struct {
		name    string
		cookies []*http.Cookie
		token   string
	}{
		{"forged cookie", []*http.Cookie{{Name: "meshchat", Value: forged}}, ""},
		{"forged token", nil, badToken},
		{"alice's MAC on bob's name", nil, swapped},
	}
	for _, base := range []string{a1, a2, a3} {
		for _, a := range attempts {
			req, _ := http.NewRequest("GET", base+"/api/me", nil)
			for _, c := range a.cookies {
				req.AddCookie(c)
			}
			if a.token != "" {
				req.Header.Set("Authorization", "Bearer "+a.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("%s on %s: %d %s", a.name, base, resp.StatusCode, body)
			}
			query := ""
			if a.token != "" {
				query = "token=" + a.token
			}
			if _, r, err := webtest.TryDial(base, webtest.Session{Cookies: a.cookies}, webtest.DialOptions{Query: query}); err == nil || r == nil || r.StatusCode != 401 {
				t.Fatalf("%s on %s opened a socket (%v)", a.name, base, err)
			}
		}
	}

	// A replayed cookie: bob logs out; his old cookie opens nothing.
	old := webtest.LoginPassword(t, a3, "bob", "bob's password")
	if st, _, _ := post(t, a3+"/api/logout", "", old.Cookies); st != 204 {
		t.Fatalf("logout: %d", st)
	}
	clustertest.WaitFor(t, 10*time.Second, "the logged-out cookie refused everywhere", func() bool {
		for _, base := range []string{a1, a2, a3} {
			if st, _ := webtest.Get(t, base+"/api/me", old.Cookies); st != 401 {
				return false
			}
		}
		return true
	})

	// A stranger with an account of her own: her inbox and history hold
	// nothing of bob's, and bob's inbox is no room she can join.
	mallory := webtest.Register(t, a3, "mallory", "mallory's password")
	mws := webtest.Dial(t, a3, mallory, webtest.DialOptions{})
	mws.Send(map[string]string{"type": "dms"})
	f := mws.ExpectNext("dm_history", 10*time.Second)
	raw, _ := json.Marshal(f)
	leaked("mallory's dms", string(raw))
	for _, room := range []string{"u:bob", "bob", "@bob"} {
		mws.Send(map[string]string{"type": "join", "room": room})
		f := mws.ExpectAny(10*time.Second, func(f webtest.Frame) bool { return f.Type() == "joined" || f.Type() == "error" })
		raw, _ := json.Marshal(f)
		leaked("joining "+room, string(raw))
	}
	// The mesh's own endpoints want the cluster secret.
	for _, base := range []string{a1, a2, a3} {
		for _, path := range []string{"/_mesh/ws", "/_mesh/", "/_mesh/history?channel=u:bob"} {
			st, body := webtest.Get(t, base+path, nil)
			if st == 200 || st == 101 {
				t.Fatalf("GET %s%s without the secret: %d", base, path, st)
			}
			leaked(path, string(body))
		}
	}
}
