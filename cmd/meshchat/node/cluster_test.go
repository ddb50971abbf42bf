package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
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
	nodes := nodetest.StartCluster(t, 3, nodetest.Options{Broker: broker, RedisURL: redisURL})
	n1, n2, n3 := nodes[0].URL(), nodes[1].URL(), nodes[2].URL()

	t.Run("cluster view", func(t *testing.T) {
		v, ok := webtest.GetCluster(t, n2)
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
		alice, bob := webtest.Login(t, n1, "alice"), webtest.Login(t, n3, "bob")
		a, b := webtest.Dial(t, n1, alice, webtest.DialOptions{}), webtest.Dial(t, n3, bob, webtest.DialOptions{})
		if a.Welcome.Str("node") != "n1" || b.Welcome.Str("node") != "n3" {
			t.Fatalf("welcome nodes: %v / %v", a.Welcome, b.Welcome)
		}
		if nodesList, _ := a.Welcome["nodes"].([]any); len(nodesList) != 3 {
			t.Errorf("welcome lists %d nodes, want 3: %v", len(nodesList), a.Welcome)
		}
		a.Join("lobby")
		b.Join("lobby")
		a.Send(map[string]string{"type": "send", "room": "lobby", "text": "hello from n1", "ref": "r1"})
		got := b.Expect("message", 10*time.Second, nil)
		if got.Str("from") != "alice" || got.Str("text") != "hello from n1" || got.Str("id") == "" {
			t.Fatalf("bob got %v", got)
		}
		if _, ok := got["ref"]; ok {
			t.Errorf("ref leaked to another user: %v", got)
		}
		echo := a.Expect("message", 10*time.Second, nil)
		if echo.Str("ref") != "r1" || echo.Str("id") != got.Str("id") {
			t.Errorf("sender's copy %v, want ref r1 and id %s", echo, got.Str("id"))
		}
	})

	t.Run("one order for all members with concurrent senders", func(t *testing.T) {
		const perSender = 30
		var conns []*webtest.Conn
		for i, base := range []string{n1, n2, n3} {
			s := webtest.Login(t, base, fmt.Sprintf("ord%d", i))
			c := webtest.Dial(t, base, s, webtest.DialOptions{})
			c.Join("order")
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				for j := range perSender {
					b, _ := json.Marshal(map[string]string{"type": "send", "room": "order", "text": fmt.Sprintf("%d-%d", i, j)})
					if err := c.TrySend(b); err != nil {
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
				f := c.Expect("message", 20*time.Second, func(f webtest.Frame) bool { return f.Str("room") == "order" })
				ids = append(ids, f.Str("id"))
				if k == 0 {
					texts = append(texts, f.Str("text"))
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
		carol, dave := webtest.Login(t, n1, "carol"), webtest.Login(t, n2, "dave")
		c1, c2 := webtest.Dial(t, n1, carol, webtest.DialOptions{}), webtest.Dial(t, n3, carol, webtest.DialOptions{})
		d1, d2 := webtest.Dial(t, n2, dave, webtest.DialOptions{}), webtest.Dial(t, n3, dave, webtest.DialOptions{})
		c1.Send(map[string]string{"type": "dm", "to": "dave", "text": "psst", "ref": "d1"})
		// One DM, one id on every copy.
		var id string
		for i, c := range []*webtest.Conn{c1, c2, d1, d2} {
			f := c.Expect("dm", 10*time.Second, nil)
			if f.Str("from") != "carol" || f.Str("to") != "dave" || f.Str("text") != "psst" || f.Str("id") == "" {
				t.Fatalf("connection %d got %v", i, f)
			}
			if i == 0 {
				id = f.Str("id")
			} else if f.Str("id") != id {
				t.Errorf("connection %d of %s: id %s, want %s as on the sender's", i, c.Welcome.Str("user"), f.Str("id"), id)
			}
			if wantRef := i == 0; (f.Str("ref") == "d1") != wantRef {
				t.Errorf("connection %d: ref %q (only the sending connection gets it)", i, f.Str("ref"))
			}
		}
	})

	t.Run("presence is cluster-wide", func(t *testing.T) {
		erin, frank := webtest.Login(t, n1, "erin"), webtest.Login(t, n3, "frank")
		e := webtest.Dial(t, n1, erin, webtest.DialOptions{})
		e.Join("presence")
		f := webtest.Dial(t, n3, frank, webtest.DialOptions{})
		joined := f.Join("presence")
		if m := joined.Members(); !slices.Contains(m, "erin") || !slices.Contains(m, "frank") {
			t.Errorf("frank's joined members = %v, want erin and frank", m)
		}
		e.Expect("presence", 10*time.Second, func(p webtest.Frame) bool { return p.Str("user") == "frank" && p["online"] == true })
		f.Close()
		e.Expect("presence", 10*time.Second, func(p webtest.Frame) bool { return p.Str("user") == "frank" && p["online"] == false })
	})

	t.Run("session from one node works on another", func(t *testing.T) {
		s := webtest.Login(t, n1, "grace")
		for _, base := range []string{n2, n3} {
			st, body := s.Do(t, http.MethodGet, base+"/api/me")
			if st != http.StatusOK {
				t.Fatalf("/api/me on %s: %d %s", base, st, body)
			}
			var me struct{ User string }
			if json.Unmarshal(body, &me); me.User != "grace" {
				t.Errorf("/api/me on %s = %s", base, body)
			}
		}
		c := webtest.Dial(t, n2, s, webtest.DialOptions{})
		if c.Welcome.Str("node") != "n2" {
			t.Errorf("welcome %v", c.Welcome)
		}
	})

	t.Run("logout ends the session everywhere", func(t *testing.T) {
		s := webtest.Login(t, n1, "heidi")
		c := webtest.Dial(t, n3, s, webtest.DialOptions{})
		if st, body := s.Do(t, http.MethodPost, n2+"/api/logout"); st != http.StatusNoContent {
			t.Fatalf("logout on n2: %d %s", st, body)
		}
		for _, base := range []string{n1, n2, n3} {
			clustertest.WaitFor(t, 10*time.Second, "/api/me 401 on "+base, func() bool {
				st, _ := webtest.Get(t, base+"/api/me", s.Cookies)
				return st == http.StatusUnauthorized
			})
			_, resp, err := webtest.TryDial(base, s, webtest.DialOptions{})
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				st := 0
				if resp != nil {
					st = resp.StatusCode
				}
				t.Errorf("ws on %s after logout: err %v, status %d; want 401", base, err, st)
			}
		}
		// The open connection of the session is closed too.
		c.Closed(10 * time.Second)
	})

	// Last: it takes a node away.
	t.Run("node stopped abruptly", func(t *testing.T) {
		ivan, judy := webtest.Login(t, n1, "ivan"), webtest.Login(t, n3, "judy")
		i := webtest.Dial(t, n1, ivan, webtest.DialOptions{})
		i.Join("crash")
		j := webtest.Dial(t, n3, judy, webtest.DialOptions{})
		j.Join("crash")
		i.Expect("presence", 10*time.Second, func(p webtest.Frame) bool { return p.Str("user") == "judy" && p["online"] == true })

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := nodes[2].Kill(ctx); err != nil {
			t.Logf("kill n3: %v", err)
		}
		i.Expect("presence", 30*time.Second, func(p webtest.Frame) bool { return p.Str("user") == "judy" && p["online"] == false })
		clustertest.WaitFor(t, 30*time.Second, "n1 and n2 to list n3 as dead", func() bool {
			return webtest.StateOf(t, n1, "n3") == "dead" && webtest.StateOf(t, n2, "n3") == "dead"
		})
		t.Logf("n3 offline and dead after %v", time.Since(start).Round(time.Millisecond))
		webtest.WaitReady(t, 10*time.Second, n1, n2)

		// The survivors keep serving, the room included.
		k := webtest.Login(t, n2, "ken")
		kc := webtest.Dial(t, n2, k, webtest.DialOptions{})
		kc.JoinUntil("crash", 10*time.Second, func(m []string) bool {
			return !slices.Contains(m, "judy") && slices.Contains(m, "ivan") && slices.Contains(m, "ken")
		})
		kc.Send(map[string]string{"type": "send", "room": "crash", "text": "still here"})
		i.Expect("message", 10*time.Second, func(f webtest.Frame) bool { return f.Str("text") == "still here" })
	})
}

// With --redis and the mesh broker, sessions live in Redis: a session
// works on every node and logout deletes it for all of them at once.
func TestClusterMeshWithRedisSessions(t *testing.T) {
	srv := redistest.Start(t)
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: "mesh", RedisURL: srv.URL()})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	if v, _ := webtest.GetCluster(t, n1); v.Broker != "mesh" {
		t.Fatalf("broker = %q, want mesh", v.Broker)
	}
	s := webtest.Login(t, n1, "olga")
	if st, _ := s.Do(t, http.MethodGet, n2+"/api/me"); st != http.StatusOK {
		t.Fatalf("/api/me on n2 = %d", st)
	}
	if keys := redisKeys(t, srv, "meshchat:session:*"); len(keys) == 0 {
		t.Fatal("no session key in Redis after login")
	}
	if st, _ := s.Do(t, http.MethodPost, n2+"/api/logout"); st != http.StatusNoContent {
		t.Fatalf("logout = %d", st)
	}
	for _, base := range []string{n1, n2} {
		if st, _ := s.Do(t, http.MethodGet, base+"/api/me"); st != http.StatusUnauthorized {
			t.Errorf("/api/me on %s after logout = %d, want 401", base, st)
		}
	}
}

// With --data, a restart of the whole cluster (same names, new ports)
// keeps each room's history and its positions: a client resuming from a
// message id taken before the restart is recovered with no gap.
func TestClusterRestartKeepsHistoryWithData(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	withData := func(i int, cfg *node.Config) { cfg.DataDir = dirs[i] }

	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: "mesh", RedisURL: "", Adjust: withData})
	s := webtest.Login(t, nodes[0].URL(), "pat")
	c := webtest.Dial(t, nodes[1].URL(), s, webtest.DialOptions{})
	c.Join("archive")
	var ids []string
	for i := range 5 {
		c.Send(map[string]string{"type": "send", "room": "archive", "text": "m" + strconv.Itoa(i)})
		ids = append(ids, c.Expect("message", 10*time.Second, nil).Str("id"))
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := len(nodes) - 1; i >= 0; i-- {
		if err := nodes[i].Stop(ctx); err != nil {
			t.Fatalf("stop %s: %v", nodes[i].Name(), err)
		}
	}

	nodes = nodetest.StartCluster(t, 2, nodetest.Options{Broker: "mesh", RedisURL: "", Adjust: withData})
	s = webtest.Login(t, nodes[1].URL(), "pat")
	c = webtest.Dial(t, nodes[0].URL(), s, webtest.DialOptions{})
	c.Send(map[string]string{"type": "join", "room": "archive", "after": ids[1]})
	joined := c.Expect("joined", 10*time.Second, nil)
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
	c.Send(map[string]string{"type": "send", "room": "archive", "text": "after restart"})
	next := c.Expect("message", 10*time.Second, nil)
	if next.Str("id") == "" || slices.Contains(ids, next.Str("id")) {
		t.Errorf("message after restart has id %q, want a new one", next.Str("id"))
	}
}

// redisKeys lists the keys matching pattern on srv.
func redisKeys(t *testing.T, srv *redistest.Server, pattern string) []string {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, pattern).Result()
	if err != nil {
		t.Fatalf("redis KEYS %s: %v", pattern, err)
	}
	return keys
}

// TestNotReadyWhileAlone: a node given seeds is part of a larger cluster;
// alone it is split off, and /readyz says so until a peer is back. With
// Expect, readiness waits for that many nodes.
func TestNotReadyWhileAlone(t *testing.T) {
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.Expect = 3 // n1 has no seeds, but is told to wait for three nodes
	n1 := nodetest.Start(t, cfg)
	n2 := nodetest.Start(t, nodetest.Config(t, "n2", "mesh", "", n1.GossipAddr()))
	clustertest.WaitFor(t, 10*time.Second, "two alive on both", func() bool {
		return len(n1.Cluster().Alive()) == 2 && len(n2.Cluster().Alive()) == 2
	})
	if st, body := webtest.Get(t, n1.URL()+"/readyz", nil); st != http.StatusServiceUnavailable {
		t.Errorf("n1 expecting 3 nodes with 2 alive: /readyz %d %s", st, body)
	}
	webtest.WaitReady(t, 10*time.Second, n2.URL())
	nodetest.Stop(t, n1)
	clustertest.WaitFor(t, 20*time.Second, "n2, alone, not ready", func() bool {
		st, _ := webtest.Get(t, n2.URL()+"/readyz", nil)
		return st == http.StatusServiceUnavailable
	})
}

// TestTricklingRequestIsCutOff: a request body that trickles one byte at
// a time held its connection forever; now the whole request must arrive
// within RequestTimeout. A WebSocket outlives that bound: it only covers
// the upgrade request; so does an events stream.
func TestTricklingRequestIsCutOff(t *testing.T) {
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.RequestTimeout = 500 * time.Millisecond
	n := nodetest.Start(t, cfg)

	alice := webtest.Login(t, n.URL(), "alice")
	ws := webtest.Dial(t, n.URL(), alice, webtest.DialOptions{})
	events := webtest.Events(t, n.URL(), alice, webtest.EventsOptions{Rooms: []string{"still-open"}})

	conn, err := net.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, conn) // returns when the node closes the connection
	}()
	start := time.Now()
	trickle := time.NewTicker(100 * time.Millisecond)
	defer trickle.Stop()
	for {
		select {
		case <-closed:
			t.Logf("trickling request cut off after %v", time.Since(start).Round(time.Millisecond))
			ws.Join("still-open") // the socket, older than the bound, still works
			// So does an events stream, a request that lasts.
			alice.Post(t, n.URL(), "/api/send", map[string]string{"room": "still-open", "text": "hi"})
			events.Expect("message", 10*time.Second, nil)
			return
		case <-trickle.C:
			if time.Since(start) > 15*time.Second {
				t.Fatal("a request trickling one byte every 100ms is still open after 15s")
			}
			_, _ = conn.Write([]byte(" "))
		}
	}
}
