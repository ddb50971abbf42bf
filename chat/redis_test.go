package chat

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport/redis"
)

// TestWithRedisBroker runs the hub's main paths on two nodes sharing a
// real Redis, where delivery is asynchronous (unlike inproc).
func TestWithRedisBroker(t *testing.T) {
	srv := redistest.Start(t)
	hub := func(node string) *Hub {
		return newHub(t, nil, node, func(c *Config) {
			b, err := redis.New(redis.Config{URL: srv.URL(), Node: node, Alive: func() []string { return []string{"n1", "n2"} }})
			if err != nil {
				t.Fatal(err)
			}
			c.Broker = b
			c.RateLimit = NoRateLimit
		})
	}
	h1, h2 := hub("n1"), hub("n2")
	alice, bob := connect(t, h1, "alice"), connect(t, h2, "bob")
	alice.join("general")
	if j := bob.join("general"); !slices.Equal(j.Members, []string{"alice", "bob"}) {
		t.Fatalf("members %v", j.Members)
	}
	alice.until("bob online", func(f frame) bool { return f.Type == "presence" && f.User == "bob" && *f.Online })

	var sent []string
	for i := range 5 {
		alice.do(`{"type":"send","room":"general","text":"m%d","ref":"r%d"}`, i, i)
		f := alice.until("ack", isType("message"))
		if f.ref() != fmt.Sprintf("r%d", i) {
			t.Fatalf("ack %+v", f)
		}
		sent = append(sent, f.ID)
	}
	for i := range 5 {
		if f := bob.until("message", isType("message")); f.ID != sent[i] || f.Ref != nil {
			t.Fatalf("bob got %+v, want %s", f, sent[i])
		}
	}
	// Retry from another connection: acked with the original id.
	again := connect(t, h2, "alice")
	again.join("general")
	again.do(`{"type":"send","room":"general","text":"m4","ref":"r4"}`)
	if f := again.until("ack", isType("message")); f.ID != sent[4] || f.ref() != "r4" {
		t.Fatalf("retry ack %+v", f)
	}

	carol := connect(t, h2, "carol")
	carol.do(`{"type":"join","room":"general","after":%q}`, sent[2])
	j := carol.until("joined", isType("joined"))
	if !*j.Recovered || ids(j.History) != sent[3]+","+sent[4] {
		t.Fatalf("resume %+v", j)
	}

	bob.do(`{"type":"dm","to":"alice","text":"hey","ref":"d"}`)
	if f := bob.until("dm ack", isType("dm")); f.ref() != "d" {
		t.Fatalf("dm ack %+v", f)
	}
	for _, tc := range []*tconn{alice, again} {
		if f := tc.until("dm", isType("dm")); f.From != "bob" || f.Ref != nil {
			t.Fatalf("dm %+v", f)
		}
	}
}
