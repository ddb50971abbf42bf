package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/web/webtest"
)

// scrape reads url (a node's metrics) and flattens it: "name" or
// `name{k="v",...}` to its value; a histogram gives name_count and
// name_sum.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %.200q", url, res.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name + labelString(m.GetLabel())
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_count"+labelString(m.GetLabel())] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+labelString(m.GetLabel())] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func TestMetricsMoveWithTrafficMesh(t *testing.T) {
	testMetricsMove(t, "mesh", "")
}

func TestMetricsMoveWithTrafficRedis(t *testing.T) {
	testMetricsMove(t, "redis", redistest.Start(t).URL())
}

// testMetricsMove scrapes both nodes of a cluster before and after a
// login, a join and a message on each side, and checks that the counters
// moved by what happened.
func testMetricsMove(t *testing.T, broker, redisURL string) {
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Broker: broker, RedisURL: redisURL})
	n1, n2 := nodes[0].URL(), nodes[1].URL()
	before1, before2 := scrape(t, n1+"/metrics"), scrape(t, n2+"/metrics")
	for _, m := range []map[string]float64{before1, before2} {
		if m["meshchat_cluster_members"] != 2 {
			t.Errorf("cluster members = %v, want 2", m["meshchat_cluster_members"])
		}
		if broker != "mesh" {
			continue
		}
		if m["meshchat_cluster_quorum"] != 1 || m[`meshchat_cluster_voters{state="total"}`] != 2 || m[`meshchat_cluster_voters{state="alive"}`] != 2 {
			t.Errorf("quorum = %v, voters %v of %v; want 1, 2 of 2", m["meshchat_cluster_quorum"],
				m[`meshchat_cluster_voters{state="alive"}`], m[`meshchat_cluster_voters{state="total"}`])
		}
	}

	alice := webtest.Dial(t, n1, webtest.Login(t, n1, "alice"), webtest.DialOptions{})
	bob := webtest.Dial(t, n2, webtest.Login(t, n2, "bob"), webtest.DialOptions{})
	alice.Join("lobby")
	bob.Join("lobby")
	alice.Send(map[string]string{"type": "send", "room": "lobby", "text": "hello", "ref": "r1"})
	bob.Expect("message", 10*time.Second, nil)
	alice.Expect("message", 10*time.Second, nil)
	alice.Send(map[string]string{"type": "send", "room": "nowhere", "text": "hello"})
	alice.Expect("error", 10*time.Second, func(f webtest.Frame) bool { return f.Str("code") == "not_joined" })

	after1, after2 := scrape(t, n1+"/metrics"), scrape(t, n2+"/metrics")
	moved := func(node string, before, after map[string]float64, key string, by float64) {
		t.Helper()
		if d := after[key] - before[key]; d != by {
			t.Errorf("%s: %s moved by %v (%v -> %v), want %v", node, key, d, before[key], after[key], by)
		}
	}
	for _, c := range []struct {
		node          string
		before, after map[string]float64
	}{{"n1", before1, after1}, {"n2", before2, after2}} {
		moved(c.node, c.before, c.after, `meshchat_logins_total{outcome="ok"}`, 1)
		moved(c.node, c.before, c.after, "meshchat_joins_total", 1)
		moved(c.node, c.before, c.after, "meshchat_connections", 1)
		moved(c.node, c.before, c.after, "meshchat_deliveries_total", 1)
	}
	moved("n1", before1, after1, "meshchat_messages_published_total", 1)
	moved("n2", before2, after2, "meshchat_messages_published_total", 0)
	moved("n1", before1, after1, "meshchat_broker_publish_seconds_count", 1)
	moved("n1", before1, after1, `meshchat_rejected_frames_total{code="not_joined"}`, 1)
	if after1["meshchat_broker_publish_seconds_sum"] <= before1["meshchat_broker_publish_seconds_sum"] {
		t.Errorf("publish seconds did not grow: %v", after1["meshchat_broker_publish_seconds_sum"])
	}
	if broker == "mesh" {
		// The lobby and the two inboxes were created somewhere.
		var created float64
		for _, m := range []map[string]float64{after1, after2} {
			created += m["meshchat_mesh_channels_created_total"]
		}
		if created < 3 {
			t.Errorf("channels created on both nodes: %v, want at least 3", created)
		}
	}

	alice.Close()
	clustertest.WaitFor(t, 10*time.Second, "alice's close to be counted", func() bool {
		m := scrape(t, n1+"/metrics")
		return m["meshchat_connections"] == before1["meshchat_connections"] &&
			m[`meshchat_connections_closed_total{code="1000"}`] == before1[`meshchat_connections_closed_total{code="1000"}`]+1
	})
}

// TestMetricsAddr: with --metrics-addr the metrics are on that listener
// alone.
func TestMetricsAddr(t *testing.T) {
	cfg := nodetest.Config(t, "n1", "mesh", "")
	cfg.MetricsAddr = "127.0.0.1:0"
	n := nodetest.Start(t, cfg)
	if n.MetricsAddr() == "" {
		t.Fatal("no metrics address with MetricsAddr set")
	}
	if m := scrape(t, "http://"+n.MetricsAddr()+"/metrics"); m["meshchat_cluster_members"] != 1 {
		t.Errorf("metrics listener: cluster members = %v", m["meshchat_cluster_members"])
	}
	if code, _ := webtest.Get(t, n.URL()+"/metrics", nil); code != http.StatusNotFound {
		t.Errorf("the HTTP listener answers /metrics with %d, want 404", code)
	}
	plain := nodetest.Start(t, nodetest.Config(t, "n2", "mesh", ""))
	if plain.MetricsAddr() != "" {
		t.Errorf("metrics listener %s without MetricsAddr", plain.MetricsAddr())
	}
}

// TestMetricsNodesApart: two nodes in one process each count their own
// (every node has a registry of its own).
func TestMetricsNodesApart(t *testing.T) {
	a := nodetest.Start(t, nodetest.Config(t, "a", "mesh", ""))
	b := nodetest.Start(t, nodetest.Config(t, "b", "mesh", ""))
	webtest.Login(t, a.URL(), "alice")
	if m := scrape(t, b.URL()+"/metrics"); m[`meshchat_logins_total{outcome="ok"}`] != 0 {
		t.Errorf("b counts a's login: %v", m[`meshchat_logins_total{outcome="ok"}`])
	}
	if m := scrape(t, a.URL()+"/metrics"); m[`meshchat_node_info{broker="mesh",node="a"}`] != 1 {
		t.Errorf("a's info: %v", m)
	}
}

// dashboardMetric finds the metric names in a PromQL expression.
var dashboardMetric = regexp.MustCompile(`\b(?:meshchat|go|process)_[a-z0-9_]+`)

// TestDashboardNamesExportedMetrics: every metric the Grafana dashboard
// in docs/ queries is exported by a running node.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	n := nodetest.Start(t, nodetest.Config(t, "n1", "mesh", ""))
	exported := map[string]bool{}
	for key := range scrape(t, n.URL()+"/metrics") {
		name, _, _ := strings.Cut(key, "{")
		exported[name] = true
	}
	var exprs int
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			names := dashboardMetric.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: expression %q names no metric", p.Title, tg.Expr)
			}
			for _, name := range names {
				// A histogram's buckets are scraped as _bucket.
				if !exported[name] && !exported[strings.TrimSuffix(name, "_bucket")+"_count"] {
					t.Errorf("panel %q: %s is not exported", p.Title, name)
				}
			}
		}
	}
	if exprs < 10 {
		t.Errorf("the dashboard has %d expressions", exprs)
	}
	for _, must := range []string{"meshchat_connections", "meshchat_messages_published_total", "meshchat_deliveries_total",
		"meshchat_slow_consumer_disconnects_total", "meshchat_broker_publish_seconds_count", "meshchat_cluster_members"} {
		if !exported[must] {
			t.Errorf("the contract's %s is not exported", must)
		}
	}
}
