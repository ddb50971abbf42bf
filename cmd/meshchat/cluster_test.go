package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshchat/meshchat/store/redistest"
)

// Three nodes in this process, with each broker, used the way users use
// them: HTTP login and WebSocket frames, users spread over nodes.

func TestClusterMesh(t *testing.T) {
	testCluster(t, "mesh", "")
}

func TestClusterRedis(t *testing.T) {
	srv := redistest.Start(t)
	testCluster(t, "redis", srv.URL())
}

func testCluster(t *testing.T, broker, redisURL string) {
	nodes := startCluster(t, 3, broker, redisURL)
	n1, n2, n3 := nodes[0].URL(), nodes[1].URL(), nodes[2].URL()

	t.Run("cluster view", func(t *testing.T) {
		v, ok := getCluster(t, n2)
		if !ok || v.Node != "n2" || v.Broker != broker || len(v.Nodes) != 3 {
			t.Fatalf("/api/cluster on n2 = %+v", v)
		}
		for _, n := range v.Nodes {
			if n.State != "alive" || n.HTTP == "" {
				t.Errorf("node %+v: want alive with an http URL", n)
			}
		}
	})

	t.Run("cross-node message", func(t *testing.T) {
		alice, bob := login(t, n1, "alice"), login(t, n3, "bob")
		a, b := dialWS(t, n1, alice, ""), dialWS(t, n3, bob, "")
		if a.welcome.str("node") != "n1" || b.welcome.str("node") != "n3" {
			t.Fatalf("welcome nodes: %v / %v", a.welcome, b.welcome)
		}
		if nodesList, _ := a.welcome["nodes"].([]any); len(nodesList) != 3 {
			t.Errorf("welcome lists %d nodes, want 3: %v", len(nodesList), a.welcome)
		}
		a.join("lobby")
		b.join("lobby")
		a.send(map[string]string{"type": "send", "room": "lobby", "text": "hello from n1", "ref": "r1"})
		got := b.expect("message", 10*time.Second, nil)
		if got.str("from") != "alice" || got.str("text") != "hello from n1" || got.str("id") == "" {
			t.Fatalf("bob got %v", got)
		}
		if _, ok := got["ref"]; ok {
			t.Errorf("ref leaked to another user: %v", got)
		}
		echo := a.expect("message", 10*time.Second, nil)
		if echo.str("ref") != "r1" || echo.str("id") != got.str("id") {
			t.Errorf("sender's copy %v, want ref r1 and id %s", echo, got.str("id"))
		}
	})

	t.Run("one order for all members with concurrent senders", func(t *testing.T) {
		const perSender = 30
		var conns []*wsConn
		for i, base := range []string{n1, n2, n3} {
			s := login(t, base, fmt.Sprintf("ord%d", i))
			c := dialWS(t, base, s, "")
			c.join("order")
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				for j := range perSender {
					b, _ := json.Marshal(map[string]string{"type": "send", "room": "order", "text": fmt.Sprintf("%d-%d", i, j)})
					c.mu.Lock()
					err := c.conn.WriteMessage(1, b)
					c.mu.Unlock()
					if err != nil {
						t.Errorf("sender %d: %v", i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		var orders [][]string
		var texts []string
		for k, c := range conns {
			var ids []string
			for len(ids) < 3*perSender {
				f := c.expect("message", 20*time.Second, func(f frame) bool { return f.str("room") == "order" })
				ids = append(ids, f.str("id"))
				if k == 0 {
					texts = append(texts, f.str("text"))
				}
			}
			orders = append(orders, ids)
		}
		for i := 1; i < len(orders); i++ {
			if !slices.Equal(orders[0], orders[i]) {
				t.Fatalf("member %d saw another order than member 0:\n%v\n%v", i, orders[i], orders[0])
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(orders[0])))) != 3*perSender {
			t.Errorf("message ids are not unique: %v", orders[0])
		}
		// Each sender's messages keep the order it sent them in.
		next := make([]int, len(conns))
		for _, text := range texts {
			var i, j int
			if _, err := fmt.Sscanf(text, "%d-%d", &i, &j); err != nil || i < 0 || i >= len(conns) {
				t.Fatalf("unexpected text %q", text)
			}
			if j != next[i] {
				t.Fatalf("sender %d: got message %d, want %d (order %v)", i, j, next[i], texts)
			}
			next[i]++
		}
	})

	t.Run("DM reaches every connection of both users", func(t *testing.T) {
		carol, dave := login(t, n1, "carol"), login(t, n2, "dave")
		c1, c2 := dialWS(t, n1, carol, ""), dialWS(t, n3, carol, "")
		d1, d2 := dialWS(t, n2, dave, ""), dialWS(t, n3, dave, "")
		c1.send(map[string]string{"type": "dm", "to": "dave", "text": "psst", "ref": "d1"})
		// Each user's inbox orders its DMs, so the ids are per user: the
		// same on all of one user's connections.
		ids := map[string]string{}
		for i, c := range []*wsConn{c1, c2, d1, d2} {
			f := c.expect("dm", 10*time.Second, nil)
			if f.str("from") != "carol" || f.str("to") != "dave" || f.str("text") != "psst" || f.str("id") == "" {
				t.Fatalf("connection %d got %v", i, f)
			}
			owner := c.welcome.str("user")
			if id, ok := ids[owner]; !ok {
				ids[owner] = f.str("id")
			} else if f.str("id") != id {
				t.Errorf("connection %d of %s: id %s, want %s as on its other connection", i, owner, f.str("id"), id)
			}
			if wantRef := i == 0; (f.str("ref") == "d1") != wantRef {
				t.Errorf("connection %d: ref %q (only the sending connection gets it)", i, f.str("ref"))
			}
		}
	})

	t.Run("presence is cluster-wide", func(t *testing.T) {
		erin, frank := login(t, n1, "erin"), login(t, n3, "frank")
		e := dialWS(t, n1, erin, "")
		e.join("presence")
		f := dialWS(t, n3, frank, "")
		joined := f.join("presence")
		if m := members(joined); !hasString(m, "erin") || !hasString(m, "frank") {
			t.Errorf("frank's joined members = %v, want erin and frank", m)
		}
		e.expect("presence", 10*time.Second, func(p frame) bool { return p.str("user") == "frank" && p["online"] == true })
		f.close()
		e.expect("presence", 10*time.Second, func(p frame) bool { return p.str("user") == "frank" && p["online"] == false })
	})

	t.Run("session from one node works on another", func(t *testing.T) {
		s := login(t, n1, "grace")
		for _, base := range []string{n2, n3} {
			st, body := s.do(t, http.MethodGet, base+"/api/me")
			if st != http.StatusOK {
				t.Fatalf("/api/me on %s: %d %s", base, st, body)
			}
			var me struct{ User string }
			if json.Unmarshal(body, &me); me.User != "grace" {
				t.Errorf("/api/me on %s = %s", base, body)
			}
		}
		c := dialWS(t, n2, s, "")
		if c.welcome.str("node") != "n2" {
			t.Errorf("welcome %v", c.welcome)
		}
	})

	t.Run("logout ends the session everywhere", func(t *testing.T) {
		s := login(t, n1, "heidi")
		c := dialWS(t, n3, s, "")
		if st, body := s.do(t, http.MethodPost, n2+"/api/logout"); st != http.StatusNoContent {
			t.Fatalf("logout on n2: %d %s", st, body)
		}
		for _, base := range []string{n1, n2, n3} {
			waitFor(t, 10*time.Second, "/api/me 401 on "+base, func() bool {
				st, _ := httpGet(t, base+"/api/me", s.cookies)
				return st == http.StatusUnauthorized
			})
			_, resp, err := tryDialWS(base, s, "")
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				st := 0
				if resp != nil {
					st = resp.StatusCode
				}
				t.Errorf("ws on %s after logout: err %v, status %d; want 401", base, err, st)
			}
		}
		// The open connection of the session is closed too.
		c.closed(10 * time.Second)
	})

	// Last: it takes a node away.
	t.Run("node stopped abruptly", func(t *testing.T) {
		ivan, judy := login(t, n1, "ivan"), login(t, n3, "judy")
		i := dialWS(t, n1, ivan, "")
		i.join("crash")
		j := dialWS(t, n3, judy, "")
		j.join("crash")
		i.expect("presence", 10*time.Second, func(p frame) bool { return p.str("user") == "judy" && p["online"] == true })

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := nodes[2].Kill(ctx); err != nil {
			t.Logf("kill n3: %v", err)
		}
		i.expect("presence", 30*time.Second, func(p frame) bool { return p.str("user") == "judy" && p["online"] == false })
		waitFor(t, 30*time.Second, "n1 and n2 to list n3 as dead", func() bool {
			return stateOf(t, n1, "n3") == "dead" && stateOf(t, n2, "n3") == "dead"
		})
		t.Logf("n3 offline and dead after %v", time.Since(start).Round(time.Millisecond))
		waitReady(t, 10*time.Second, n1, n2)

		// The survivors keep serving, the room included.
		k := login(t, n2, "ken")
		kc := dialWS(t, n2, k, "")
		kc.joinUntil("crash", 10*time.Second, func(m []string) bool {
			return !hasString(m, "judy") && hasString(m, "ivan") && hasString(m, "ken")
		})
		kc.send(map[string]string{"type": "send", "room": "crash", "text": "still here"})
		i.expect("message", 10*time.Second, func(f frame) bool { return f.str("text") == "still here" })
	})
}

// With --redis and the mesh broker, sessions live in Redis: a session
// works on every node and logout deletes it for all of them at once.
func TestClusterMeshWithRedisSessions(t *testing.T) {
	srv := redistest.Start(t)
	nodes := startCluster(t, 2, "mesh", srv.URL())
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	if v, _ := getCluster(t, n1); v.Broker != "mesh" {
		t.Fatalf("broker = %q, want mesh", v.Broker)
	}
	s := login(t, n1, "olga")
	if st, _ := s.do(t, http.MethodGet, n2+"/api/me"); st != http.StatusOK {
		t.Fatalf("/api/me on n2 = %d", st)
	}
	if keys := redisKeys(t, srv.Addr(), "meshchat:session:*"); len(keys) == 0 {
		t.Fatal("no session key in Redis after login")
	}
	if st, _ := s.do(t, http.MethodPost, n2+"/api/logout"); st != http.StatusNoContent {
		t.Fatalf("logout = %d", st)
	}
	for _, base := range []string{n1, n2} {
		if st, _ := s.do(t, http.MethodGet, base+"/api/me"); st != http.StatusUnauthorized {
			t.Errorf("/api/me on %s after logout = %d, want 401", base, st)
		}
	}
}

// With --data, a restart of the whole cluster (same names, new ports)
// keeps each room's history and its positions: a client resuming from a
// message id taken before the restart is recovered with no gap.
func TestClusterRestartKeepsHistoryWithData(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	withData := func(i int, cfg *Config) { cfg.DataDir = dirs[i] }

	nodes := startClusterWith(t, 2, "mesh", "", withData)
	s := login(t, nodes[0].URL(), "pat")
	c := dialWS(t, nodes[1].URL(), s, "")
	c.join("archive")
	var ids []string
	for i := range 5 {
		c.send(map[string]string{"type": "send", "room": "archive", "text": "m" + itoa(i)})
		ids = append(ids, c.expect("message", 10*time.Second, nil).str("id"))
	}
	c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := nodes[i].Stop(ctx); err != nil {
			t.Fatalf("stop %s: %v", nodes[i].Name(), err)
		}
	}

	nodes = startClusterWith(t, 2, "mesh", "", withData)
	s = login(t, nodes[1].URL(), "pat")
	c = dialWS(t, nodes[0].URL(), s, "")
	c.send(map[string]string{"type": "join", "room": "archive", "after": ids[1]})
	joined := c.expect("joined", 10*time.Second, nil)
	if joined["recovered"] != true {
		t.Fatalf("joined after restart: recovered = %v, want true (%v)", joined["recovered"], joined)
	}
	hist, _ := joined["history"].([]any)
	var got []string
	for _, h := range hist {
		if m, ok := h.(map[string]any); ok {
			got = append(got, fmt.Sprint(m["id"]))
		}
	}
	if !slices.Equal(got, ids[2:]) {
		t.Fatalf("history after restart = %v, want %v", got, ids[2:])
	}
	c.send(map[string]string{"type": "send", "room": "archive", "text": "after restart"})
	next := c.expect("message", 10*time.Second, nil)
	if next.str("id") == "" || slices.Contains(ids, next.str("id")) {
		t.Errorf("message after restart has id %q, want a new one", next.str("id"))
	}
}
