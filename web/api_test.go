package web

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/web/webtest"
)

const testAPIKey = "s3cret-api-key"

// apiAnswer is any server API answer, decoded loosely.
type apiAnswer struct {
	ID    string `json:"id"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Room     string          `json:"room"`
	Node     string          `json:"node"`
	Scope    string          `json:"scope"`
	Members  []string        `json:"members"`
	Messages []webtest.Frame `json:"messages"`
	Rooms    []apiRoom       `json:"rooms"`
}

// api calls the server API with key ("" sends no Authorization header).
func (e *env) api(method, path, key, body string) (int, apiAnswer) {
	e.t.Helper()
	st, data := webtest.API(e.t, e.ts.URL, key, method, path, body)
	var a apiAnswer
	if err := json.Unmarshal(data, &a); len(data) > 0 && err != nil {
		e.t.Fatalf("%s %s: %d %q: %v", method, path, st, data, err)
	}
	return st, a
}

func newAPIEnv(t *testing.T, mod func(*chat.Config)) *env {
	return newEnv(t, envOpts{hub: mod, web: func(c *Config) { c.APIKey = testAPIKey }})
}

func TestServerAPIOffWithoutKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, key := range []string{"", testAPIKey} {
		st, a := e.api("POST", "/publish", key, `{"room":"general","from":"bot","text":"hi"}`)
		if st != http.StatusNotFound || a.Error.Code != CodeNotFound {
			t.Fatalf("publish with the API off (key %q): %d %+v", key, st, a)
		}
	}
}

func TestServerAPIKey(t *testing.T) {
	logs := &clustertest.Buffer{}
	e := newEnv(t, envOpts{web: func(c *Config) {
		c.APIKey = testAPIKey
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	body := `{"room":"general","from":"bot","text":"hi"}`
	for _, tc := range []struct {
		name, auth string
	}{
		{"none", ""},
		{"wrong key", "Bearer nope"},
		{"key as prefix", "Bearer " + testAPIKey + "x"},
		{"prefix of key", "Bearer " + testAPIKey[:5]},
		{"not bearer", "Basic " + testAPIKey},
		{"bare key", testAPIKey},
		{"session token", "Bearer " + webtest.Login(t, e.ts.URL, "mallory").Token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a apiAnswer
			resp := e.do(webtest.Client(t, nil), "POST", "/api/server/publish", body, hdr("Authorization", tc.auth), &a)
			if resp.StatusCode != http.StatusUnauthorized || a.Error.Code != CodeUnauthorized ||
				resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%d %+v", resp.StatusCode, a)
			}
		})
	}
	// Every endpoint, and paths that do not exist, want the key first.
	for _, p := range []string{"GET /history?room=general", "GET /rooms", "GET /presence?room=general", "POST /dm", "POST /disconnect", "GET /nothing"} {
		method, path, _ := strings.Cut(p, " ")
		if st, a := e.api(method, path, "wrong", `{}`); st != http.StatusUnauthorized || a.Error.Code != CodeUnauthorized {
			t.Fatalf("%s without the key: %d %+v", p, st, a)
		}
	}
	if st, a := e.api("POST", "/publish", testAPIKey, body); st != http.StatusOK || a.ID == "" {
		t.Fatalf("with the key: %d %+v", st, a)
	}
	if strings.Contains(logs.String(), testAPIKey) {
		t.Fatalf("the key was logged:\n%s", logs)
	}
}

func TestServerAPIPublishReachesWebSocket(t *testing.T) {
	e := newAPIEnv(t, nil)
	alice := webtest.Login(t, e.ts.URL, "alice")
	ws := webtest.Dial(t, e.ts.URL, alice, webtest.DialOptions{})
	ws.Join("general")

	st, a := e.api("POST", "/publish", testAPIKey, `{"room":"general","from":"deploy-bot","text":"v2 is out","ref":"deploy-42"}`)
	if st != http.StatusOK || a.ID == "" {
		t.Fatalf("publish: %d %+v", st, a)
	}
	f := ws.Expect("message", waitFor, nil)
	if f.Str("id") != a.ID || f.Str("from") != "deploy-bot" || f.Str("text") != "v2 is out" || f.Str("ref") != "" {
		t.Fatalf("delivered %v, want id %s", f, a.ID)
	}
	// The same ref again: the original id, stored once.
	if st, again := e.api("POST", "/publish", testAPIKey, `{"room":"general","from":"deploy-bot","text":"v2 is out","ref":"deploy-42"}`); st != http.StatusOK || again.ID != a.ID {
		t.Fatalf("repeat: %d %+v, want id %s", st, again, a.ID)
	}
	st, h := e.api("GET", "/history?room=general&limit=10", testAPIKey, "")
	if st != http.StatusOK || len(h.Messages) != 1 {
		t.Fatalf("history: %d %+v", st, h)
	}
	if m := h.Messages[0]; m.Type() != "message" || m.Str("id") != a.ID || m.Str("room") != "general" ||
		m.Str("from") != "deploy-bot" || m.Int("ts") != f.Int("ts") {
		t.Fatalf("history message %v, want the delivered %v", m, f)
	}
}

func TestServerAPIBadInput(t *testing.T) {
	e := newAPIEnv(t, func(c *chat.Config) { c.MaxTextBytes = 100 })
	long := strings.Repeat("x", 101)
	huge := strings.Repeat("x", maxAPIBody)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bad room", "POST", "/publish", `{"room":"a b","from":"bot","text":"hi"}`, 400, chat.CodeBadRoom},
		{"no room", "POST", "/publish", `{"from":"bot","text":"hi"}`, 400, chat.CodeBadRoom},
		{"bad sender", "POST", "/publish", `{"room":"general","from":"b/ot","text":"hi"}`, 400, chat.CodeBadName},
		{"empty text", "POST", "/publish", `{"room":"general","from":"bot","text":""}`, 400, chat.CodeBadText},
		{"blank text", "POST", "/publish", `{"room":"general","from":"bot","text":"  "}`, 400, chat.CodeBadText},
		{"text too long", "POST", "/publish", `{"room":"general","from":"bot","text":"` + long + `"}`, 400, chat.CodeBadText},
		{"ref too long", "POST", "/publish", `{"room":"general","from":"bot","text":"hi","ref":"` + long + `"}`, 400, chat.CodeBadRef},
		{"body too large", "POST", "/publish", `{"room":"general","from":"bot","text":"` + huge + `"}`, 413, CodeTooLarge},
		{"not JSON", "POST", "/publish", `room=general`, 400, CodeBadRequest},
		{"wrong type", "POST", "/publish", `{"room":7,"from":"bot","text":"hi"}`, 400, CodeBadRequest},
		{"empty body", "POST", "/publish", ``, 400, CodeBadRequest},
		{"wrong method", "GET", "/publish", ``, 405, CodeMethodNotAllow},
		{"unknown path", "GET", "/nothing", ``, 404, CodeNotFound},
		{"dm bad recipient", "POST", "/dm", `{"from":"bot","to":"","text":"hi"}`, 400, chat.CodeBadName},
		{"dm bad text", "POST", "/dm", `{"from":"bot","to":"bob","text":"` + long + `"}`, 400, chat.CodeBadText},
		{"history bad room", "GET", "/history?room=a%20b", ``, 400, chat.CodeBadRoom},
		{"history bad limit", "GET", "/history?room=general&limit=x", ``, 400, CodeBadRequest},
		{"history zero limit", "GET", "/history?room=general&limit=0", ``, 400, CodeBadRequest},
		{"presence no room", "GET", "/presence", ``, 400, chat.CodeBadRoom},
		{"disconnect bad user", "POST", "/disconnect", `{"user":"a b"}`, 400, chat.CodeBadName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, a := e.api(tc.method, tc.path, testAPIKey, tc.body)
			if st != tc.status || a.Error.Code != tc.code || a.Error.Message == "" {
				t.Fatalf("%d %+v, want %d %s", st, a.Error, tc.status, tc.code)
			}
		})
	}
	// None of it was stored.
	if st, h := e.api("GET", "/history?room=general", testAPIKey, ""); st != 200 || len(h.Messages) != 0 {
		t.Fatalf("history after bad input: %d %+v", st, h)
	}
}

func TestServerAPIRateLimit(t *testing.T) {
	e := newAPIEnv(t, func(c *chat.Config) { c.RateLimit, c.RateBurst = 0.001, 2 })
	post := func(from string) (int, apiAnswer) {
		return e.api("POST", "/publish", testAPIKey, fmt.Sprintf(`{"room":"general","from":%q,"text":"hi"}`, from))
	}
	for range 2 {
		if st, a := post("bot"); st != 200 {
			t.Fatalf("within the burst: %d %+v", st, a)
		}
	}
	if st, a := post("bot"); st != http.StatusTooManyRequests || a.Error.Code != chat.CodeRateLimited {
		t.Fatalf("over the limit: %d %+v", st, a)
	}
	if st, a := post("other-bot"); st != 200 {
		t.Fatalf("another sender: %d %+v", st, a)
	}
}

func TestServerAPIDMPresenceRoomsDisconnect(t *testing.T) {
	e := newAPIEnv(t, nil)
	bob := webtest.Dial(t, e.ts.URL, webtest.Login(t, e.ts.URL, "bob"), webtest.DialOptions{})
	carol := webtest.Dial(t, e.ts.URL, webtest.Login(t, e.ts.URL, "carol"), webtest.DialOptions{})
	bob.Join("general")
	carol.Join("general")
	carol.Join("side")

	st, a := e.api("POST", "/dm", testAPIKey, `{"from":"support","to":"bob","text":"ticket 7 is closed"}`)
	if st != 200 || a.ID == "" {
		t.Fatalf("dm: %d %+v", st, a)
	}
	if f := bob.Expect("dm", waitFor, nil); f.Str("from") != "support" || f.Str("text") != "ticket 7 is closed" {
		t.Fatalf("bob got %v", f)
	}

	st, a = e.api("GET", "/presence?room=general", testAPIKey, "")
	if st != 200 || a.Room != "general" || !slices.Equal(a.Members, []string{"bob", "carol"}) {
		t.Fatalf("presence: %d %+v", st, a)
	}
	st, a = e.api("GET", "/rooms", testAPIKey, "")
	want := []apiRoom{{Room: "general", Members: 2, Local: 2}, {Room: "side", Members: 1, Local: 1}}
	if st != 200 || a.Scope != "node" || a.Node != "n1" || !slices.Equal(a.Rooms, want) {
		t.Fatalf("rooms: %d %+v", st, a)
	}

	if st, a := e.api("POST", "/disconnect", testAPIKey, `{"user":"bob"}`); st != http.StatusNoContent {
		t.Fatalf("disconnect: %d %+v", st, a)
	}
	if code := bob.Closed(waitFor); code != chat.CloseDisconnected {
		t.Fatalf("bob closed with %d, want %d", code, chat.CloseDisconnected)
	}
	if err := carol.Err(); err != nil {
		t.Fatalf("carol's connection ended too: %v", err)
	}
	clustertest.WaitFor(t, waitFor, "bob offline", func() bool {
		_, a := e.api("GET", "/presence?room=general", testAPIKey, "")
		return slices.Equal(a.Members, []string{"carol"})
	})
}
