package node_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// With accounts, a DM to a name nobody registered is refused on every
// path (a dm frame, POST /api/dm, the server API's /dm): inboxes cannot
// be made up and filled.
func TestDMToUnregisteredName(t *testing.T) {
	const wait = 10 * time.Second
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.Auth, cfg.APIKey = "password", apiKey
	base := nodetest.Start(t, cfg).URL()
	alice := webtest.Register(t, base, "alice", "alice-password")
	webtest.Register(t, base, "bob", "bob-password")
	c := webtest.Dial(t, base, alice, webtest.DialOptions{})
	c.Send(map[string]string{"type": "dm", "to": "nobody", "text": "hi", "ref": "r1"})
	if f := c.ExpectNext("error", wait); f.Str("code") != chat.CodeNoSuchUser || f.Str("ref") != "r1" {
		t.Fatalf("dm to an unregistered name: %v", f)
	}
	c.Send(map[string]string{"type": "dm", "to": "bob", "text": "hi", "ref": "r2"})
	c.Expect("dm", wait, func(f webtest.Frame) bool { return f.Str("ref") == "r2" })
	if st, f := alice.Post(t, base, "/api/dm", map[string]string{"to": "nobody", "text": "hi"}); st != 404 || f.ErrorCode() != chat.CodeNoSuchUser {
		t.Fatalf("POST /api/dm to an unregistered name: %d %v", st, f)
	}
	if st, body := webtest.API(t, base, apiKey, "POST", "/dm", `{"from":"alice","to":"nobody","text":"hi"}`); st != 404 || !strings.Contains(string(body), chat.CodeNoSuchUser) {
		t.Fatalf("server API DM to an unregistered name: %d %s", st, body)
	}
}

// A node fed more history than its budget keeps what it retains in
// memory under it, and says so in its metrics.
func TestHistoryBudgetMetrics(t *testing.T) {
	const budget = 256 << 10
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.HistoryBudget, cfg.APIKey = budget, apiKey
	base := nodetest.Start(t, cfg).URL()
	text := strings.Repeat("x", 4000)
	for i := range 100 {
		body := fmt.Sprintf(`{"room":"r%d","from":"u%d","text":%q}`, i%10, i, text)
		if st, b := webtest.API(t, base, apiKey, "POST", "/publish", body); st != 200 {
			t.Fatalf("publish: %d %s", st, b)
		}
	}
	clustertest.WaitFor(t, 5*time.Second, "retained history under budget", func() bool {
		m := scrape(t, base+"/metrics")
		return m["meshchat_history_retained_bytes"] <= budget && m["meshchat_history_evictions_total"] > 0
	})
}
