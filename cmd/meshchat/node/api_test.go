package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

const apiKey = "node-test-api-key-0123456789"

func TestServerAPIMesh(t *testing.T) { testServerAPI(t, "mesh", "") }

func TestServerAPIRedis(t *testing.T) {
	srv := redistest.Start(t)
	testServerAPI(t, "redis", srv.URL())
}

// apiCall calls the server API on base and decodes a 2xx answer into
// out (when non-nil); it fails the test on any other status.
func apiCall(t *testing.T, base, method, path, body string, out any) {
	t.Helper()
	st, data := webtest.API(t, base, apiKey, method, path, body)
	if st/100 != 2 {
		t.Fatalf("%s %s on %s: %d %s", method, path, base, st, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %q: %v", method, path, data, err)
		}
	}
}

// testServerAPI: a program posts through node A; the users are on node
// B. What it posts is the room's own message, with one id everywhere.
func testServerAPI(t *testing.T, broker, redisURL string) {
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: broker, RedisURL: redisURL,
		Adjust: func(_ int, c *node.Config) { c.APIKey = apiKey }})
	a, b := nodes[0].URL(), nodes[1].URL()
	bob := webtest.Dial(t, b, webtest.Login(t, b, "bob"), webtest.DialOptions{})
	bob.Join("news")

	var posted struct{ ID string }
	apiCall(t, a, "POST", "/publish", `{"room":"news","from":"cron","text":"nightly build is green","ref":"build-1"}`, &posted)
	f := bob.Expect("message", 10*time.Second, nil)
	if f.Str("id") != posted.ID || f.Str("from") != "cron" || f.Str("text") != "nightly build is green" {
		t.Fatalf("bob on %s got %v, want id %s from the API on %s", b, f, posted.ID, a)
	}
	for _, base := range []string{a, b} {
		var h struct{ Messages []webtest.Frame }
		apiCall(t, base, "GET", "/history?room=news&limit=5", "", &h)
		if len(h.Messages) != 1 || h.Messages[0].Str("id") != posted.ID || h.Messages[0].Int("ts") != f.Int("ts") {
			t.Fatalf("history on %s: %v, want the message %v", base, h.Messages, f)
		}
	}

	var dm struct{ ID string }
	apiCall(t, a, "POST", "/dm", `{"from":"support","to":"bob","text":"your ticket is closed"}`, &dm)
	if f := bob.Expect("dm", 10*time.Second, nil); f.Str("from") != "support" || f.Str("to") != "bob" {
		t.Fatalf("bob got %v", f)
	}

	// Presence is cluster-wide; the room list is each node's own.
	var pres struct{ Members []string }
	apiCall(t, a, "GET", "/presence?room=news", "", &pres)
	if !slices.Equal(pres.Members, []string{"bob"}) {
		t.Fatalf("presence of news on %s: %v", a, pres.Members)
	}
	type room struct {
		Room           string
		Members, Local int
	}
	var rooms struct {
		Node, Scope string
		Rooms       []room
	}
	apiCall(t, b, "GET", "/rooms", "", &rooms)
	if rooms.Node != nodes[1].Name() || rooms.Scope != "node" || !slices.Equal(rooms.Rooms, []room{{"news", 1, 1}}) {
		t.Fatalf("rooms on %s: %+v", b, rooms)
	}
	apiCall(t, a, "GET", "/rooms", "", &rooms)
	if len(rooms.Rooms) != 0 {
		t.Fatalf("rooms on %s, where nobody is connected: %+v", a, rooms)
	}

	apiCall(t, a, "POST", "/disconnect", `{"user":"bob"}`, nil)
	if code := bob.Closed(10 * time.Second); code != chat.CloseDisconnected {
		t.Fatalf("bob on %s closed with %d, want %d", b, code, chat.CloseDisconnected)
	}
	if st, _ := webtest.API(t, b, "wrong-key", "GET", "/rooms", ""); st != http.StatusUnauthorized {
		t.Fatalf("a wrong key on %s: %d", b, st)
	}
}
