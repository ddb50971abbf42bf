package node_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// report is what GET /api/admin/node says, as far as these tests read it.
type report struct {
	Node         string
	Connections  int
	BrokerHealth struct {
		OK    bool
		Error string
		Links []struct{ Node, State string }
	} `json:"broker_health"`
	Rooms []struct {
		Room, Owner string
		Members     []string
		Private     bool
		OwnerNode   string `json:"owner_node"`
	}
}

func adminReport(t *testing.T, base string) report {
	t.Helper()
	st, data := webtest.Bearer(t, base, apiKey, "GET", "/api/admin/node", "")
	var r report
	if st != 200 || json.Unmarshal(data, &r) != nil {
		t.Fatalf("report of %s: %d %s", base, st, data)
	}
	return r
}

func TestAdminReportMesh(t *testing.T) { testAdminReport(t, "mesh", nil) }

func TestAdminReportRedis(t *testing.T) {
	srv := redistest.Start(t)
	testAdminReport(t, "redis", srv)
}

// testAdminReport: each node reports its own connections and rooms, a
// private room's owner, the node that orders each room (mesh), and its
// broker's health: the mesh's links, or whether Redis answers.
func testAdminReport(t *testing.T, broker string, redis *redistest.Server) {
	var redisURL string
	if redis != nil {
		redisURL = redis.URL()
	}
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: broker, RedisURL: redisURL,
		Adjust: func(_ int, c *node.Config) { c.APIKey = apiKey }})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	const wait = 10 * time.Second
	alice := webtest.Dial(t, n1, webtest.Login(t, n1, "alice"), webtest.DialOptions{})
	bob := webtest.Dial(t, n2, webtest.Login(t, n2, "bob"), webtest.DialOptions{})
	alice.Send(map[string]any{"type": "join", "room": "plans", "private": true})
	alice.ExpectNext("joined", wait)
	alice.SendRetry("plans", "hello", wait)
	bob.Join("general")

	r1 := adminReport(t, n1)
	if r1.Node != "n1" || r1.Connections != 1 || len(r1.Rooms) != 1 {
		t.Fatalf("n1 reports %+v", r1)
	}
	plans := r1.Rooms[0]
	if plans.Room != "plans" || !plans.Private || plans.Owner != "alice" || !slices.Equal(plans.Members, []string{"alice"}) {
		t.Errorf("n1's room %+v", plans)
	}
	if r2 := adminReport(t, n2); r2.Node != "n2" || len(r2.Rooms) != 1 || r2.Rooms[0].Room != "general" || r2.Rooms[0].Private {
		t.Errorf("n2 reports %+v", r2)
	}
	if !r1.BrokerHealth.OK {
		t.Errorf("n1's broker is unhealthy: %+v", r1.BrokerHealth)
	}

	if broker == "mesh" {
		if plans.OwnerNode != "n1" && plans.OwnerNode != "n2" {
			t.Errorf("plans is ordered by %q", plans.OwnerNode)
		}
		// n1 published to plans, whose copy (or owner) is on n2.
		clustertest.WaitFor(t, wait, "n1's link to n2", func() bool {
			l := adminReport(t, n1).BrokerHealth.Links
			return len(l) == 1 && l[0].Node == "n2" && l[0].State == "up"
		})
		// Of two, the higher-named node left alone has no quorum, and its
		// report says so.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := nodes[0].Kill(ctx); err != nil {
			t.Logf("kill n1: %v", err)
		}
		clustertest.WaitFor(t, 30*time.Second, "n2 to report that it has no quorum", func() bool {
			h := adminReport(t, n2).BrokerHealth
			return !h.OK && strings.Contains(h.Error, "no quorum")
		})
		return
	}
	if plans.OwnerNode != "" {
		t.Errorf("a room on Redis is ordered by node %q", plans.OwnerNode)
	}
	redis.Kill()
	if h := adminReport(t, n1).BrokerHealth; h.OK || h.Error == "" {
		t.Errorf("with Redis gone: %+v", h)
	}
}
