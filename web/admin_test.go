package web

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/meshchat/meshchat/chat"
)

// memberOrigin is the HTTP URL of another node of the test cluster.
const memberOrigin = "http://10.0.0.2:8080"

// fakeInspector reports a fixed broker health and one owner node for
// every room.
type fakeInspector struct{}

func (fakeInspector) BrokerHealth(context.Context) BrokerHealth {
	return BrokerHealth{OK: false, Error: "a link is down", Links: []LinkHealth{{Node: "n2", State: "down", Error: "refused"}}}
}
func (fakeInspector) RoomOwner(string) string { return "n2" }

func newAdminEnv(t *testing.T) *env {
	return newEnv(t, envOpts{web: func(c *Config) {
		c.Admins = []string{"root"}
		c.APIKey = testAPIKey
		c.Inspector = fakeInspector{}
		c.Members = MembershipFunc(func() []Member {
			return []Member{{Name: "n1", HTTP: "http://127.0.0.1:1", State: "alive"}, {Name: "n2", HTTP: memberOrigin, State: "alive"}}
		})
	}})
}

type reportAnswer struct {
	nodeReport
	Error struct{ Code string } `json:"error"`
}

// report asks for the node's report with c's cookies and header h.
func (e *env) report(c *http.Client, h http.Header) (*http.Response, reportAnswer) {
	e.t.Helper()
	var a reportAnswer
	resp := e.do(c, "GET", "/api/admin/node", "", h, &a)
	return resp, a
}

// TestAdminNodeReport: an admin's session or the API key get the node's
// report; no session is 401, a user who is no admin 403.
func TestAdminNodeReport(t *testing.T) {
	e := newAdminEnv(t)
	alice := e.connect("alice", nil)
	alice.Join("general")
	rootClient, rootToken := e.login("root")

	for _, tc := range []struct {
		name string
		c    *http.Client
		h    http.Header
	}{
		{"admin cookie", rootClient, nil},
		{"admin token", newClient(t), hdr("Authorization", "Bearer "+rootToken)},
		{"api key", newClient(t), hdr("Authorization", "Bearer "+testAPIKey)},
	} {
		resp, a := e.report(tc.c, tc.h)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %+v", tc.name, resp.StatusCode, a)
		}
		want := []adminRoom{{Room: "general", Members: []string{"alice"}, Local: 1, Owner: "", Node: "n2"}}
		if a.Node != "n1" || a.Broker != "mesh" || a.Connections != 1 || !a.Ready || a.Time == 0 ||
			!slices.EqualFunc(a.Rooms, want, func(x, y adminRoom) bool {
				return x.Room == y.Room && slices.Equal(x.Members, y.Members) && x.Local == y.Local && x.Node == y.Node && !x.Private
			}) {
			t.Errorf("%s: report %+v", tc.name, a.nodeReport)
		}
		if a.Health.OK || len(a.Health.Links) != 1 || a.Health.Links[0].State != "down" {
			t.Errorf("%s: broker health %+v, want the inspector's", tc.name, a.Health)
		}
		if len(a.Cluster) != 2 || a.SlowConsumers == nil {
			t.Errorf("%s: cluster %+v, slow consumers %v", tc.name, a.Cluster, a.SlowConsumers)
		}
	}

	aliceClient, _ := e.login("alice")
	for _, tc := range []struct {
		name   string
		c      *http.Client
		h      http.Header
		status int
		code   string
	}{
		{"no session", newClient(t), nil, 401, CodeUnauthorized},
		{"wrong key", newClient(t), hdr("Authorization", "Bearer not-the-key"), 401, CodeUnauthorized},
		{"not an admin", aliceClient, nil, 403, CodeForbidden},
	} {
		resp, a := e.report(tc.c, tc.h)
		if resp.StatusCode != tc.status || a.Error.Code != tc.code || a.Node != "" {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, a.Error.Code, tc.status, tc.code)
		}
	}
}

// TestAdminNodeCORS: a page on another node of the cluster may read the
// report with the admin's cookie; a page of any other origin may not.
func TestAdminNodeCORS(t *testing.T) {
	e := newAdminEnv(t)
	root, _ := e.login("root")

	resp, _ := e.report(root, hdr("Origin", memberOrigin))
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != memberOrigin ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("member origin: %d %v", resp.StatusCode, resp.Header)
	}
	// Refusals are readable too, so the page can say why.
	resp, _ = e.report(newClient(t), hdr("Origin", memberOrigin))
	if resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != memberOrigin {
		t.Errorf("member origin without a session: %d %v", resp.StatusCode, resp.Header)
	}
	resp = e.do(newClient(t), "OPTIONS", "/api/admin/node", "", hdr("Origin", memberOrigin,
		"Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization"), nil)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != memberOrigin ||
		resp.Header.Get("Access-Control-Allow-Headers") != "Authorization" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	for _, origin := range []string{"http://evil.example", "http://10.0.0.2:8081"} {
		resp, a := e.report(root, hdr("Origin", origin))
		if resp.StatusCode != 403 || a.Error.Code != CodeForbiddenOrigin || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("origin %s: %d %q %v", origin, resp.StatusCode, a.Error.Code, resp.Header)
		}
		resp = e.do(newClient(t), "OPTIONS", "/api/admin/node", "", hdr("Origin", origin), nil)
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from %s: %d %v", origin, resp.StatusCode, resp.Header)
		}
	}
}

// TestAdminDisconnectAndBanWithKey: admins disconnect a user everywhere;
// the API key may ban and disconnect too; other users may do neither.
func TestAdminDisconnectAndBanWithKey(t *testing.T) {
	e := newAdminEnv(t)
	root, _ := e.login("root")
	aliceClient, _ := e.login("alice")
	bob := e.connect("bob", nil)

	for _, c := range []*http.Client{aliceClient, newClient(t)} {
		if resp := e.do(c, "POST", "/api/admin/disconnect", `{"user":"bob"}`, nil, nil); resp.StatusCode != 403 && resp.StatusCode != 401 {
			t.Errorf("disconnect by a non-admin: %d", resp.StatusCode)
		}
	}
	if resp := e.do(root, "POST", "/api/admin/disconnect", `{"user":"bad name"}`, nil, nil); resp.StatusCode != 400 {
		t.Errorf("disconnect of a bad name: %d", resp.StatusCode)
	}
	if resp := e.do(root, "POST", "/api/admin/disconnect", `{"user":"bob"}`, nil, nil); resp.StatusCode != 204 {
		t.Fatalf("disconnect: %d", resp.StatusCode)
	}
	if code := bob.Closed(waitFor); code != chat.CloseDisconnected {
		t.Fatalf("bob closed with %d, want %d", code, chat.CloseDisconnected)
	}

	bob = e.connect("bob", nil)
	key := hdr("Authorization", "Bearer "+testAPIKey)
	if resp := e.do(newClient(t), "POST", "/api/admin/ban", `{"user":"bob"}`, key, nil); resp.StatusCode != 204 {
		t.Fatalf("ban with the API key: %d", resp.StatusCode)
	}
	if code := bob.Closed(waitFor); code != chat.CloseBanned {
		t.Fatalf("bob closed with %d, want %d", code, chat.CloseBanned)
	}
	if resp := e.do(newClient(t), "POST", "/api/admin/unban", `{"user":"bob"}`, key, nil); resp.StatusCode != 204 {
		t.Fatalf("unban with the API key: %d", resp.StatusCode)
	}
	e.connect("bob", nil)
}

// TestAdminKeyOffWithoutKey: without an API key configured, an empty
// bearer token is not one.
func TestAdminKeyOffWithoutKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	if resp, _ := e.report(newClient(t), hdr("Authorization", "Bearer ")); resp.StatusCode != 401 {
		t.Errorf("empty bearer without a key: %d", resp.StatusCode)
	}
}
