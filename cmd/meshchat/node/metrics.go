package node

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshchat/meshchat/chat"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/redis"
	"github.com/meshchat/meshchat/web"
)

// MetricsPath is where a node serves its Prometheus metrics: on the HTTP
// listener, or on Config.MetricsAddr's listener alone when that is set.
const MetricsPath = "/metrics"

// metrics is a node's Prometheus registry, its own (several nodes run in
// one process in tests and the demo): the Go and process collectors, the
// histograms the parts observe into, and nodeCollector, which reads the
// parts' counters when scraped. Counting stays with the parts, in atomic
// counters (chat.Stats, mesh.Stats, web.Stats): no metric update on the
// fan-out path costs a lock or an allocation.
type metrics struct {
	reg *prometheus.Registry
	// Set before the parts that observe into them are made.
	publishSeconds  prometheus.Histogram
	requestSeconds  prometheus.Histogram // mesh only
	takeoverSeconds prometheus.Histogram // mesh only
	// replicateSeconds observes the owner's copies to backups (mesh);
	// redisHook, Redis commands by name (with --redis).
	replicateSeconds prometheus.Histogram
	redisHook        *redis.CommandHook
}

// latencyBuckets run from 100µs to about 2.4s: a publication within one
// host takes well under a millisecond, across a network a few, and one
// that waits out an owner's failure seconds.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 12)

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	hist := func(name, help string) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
		m.reg.MustRegister(h)
		return h
	}
	m.publishSeconds = hist("meshchat_broker_publish_seconds", "Time the broker took to accept a message or DM (each attempt, failed ones too).")
	if n.cfg.Broker == "mesh" {
		m.requestSeconds = hist("meshchat_mesh_request_seconds", "Round trip of a request to a peer node over its mesh link.")
		m.takeoverSeconds = hist("meshchat_mesh_takeover_seconds", "Time a takeover of a channel's ownership took.")
		m.replicateSeconds = hist("meshchat_mesh_replication_seconds", "Time from an owner sending a batch of publications to its channel's backup until the backup confirmed it (replication lag).")
	}
	if n.cfg.RedisURL != "" {
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshchat_redis_command_seconds",
			Help:    "Time a Redis command took (each attempt), by command; the broker's scripts by name, pipelines as one, unlisted commands as other.",
			Buckets: latencyBuckets,
		}, []string{"cmd"})
		m.reg.MustRegister(vec)
		// Every series is made here, once: a command only observes.
		m.redisHook = redis.NewCommandHook(func(cmd string) transport.Observer { return vec.WithLabelValues(cmd) })
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newNodeCollector(n),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// nodeCollector turns the parts' counters into metrics at scrape time.
type nodeCollector struct {
	n    *Node
	mesh bool
	tls  bool
}

// The descriptions of what nodeCollector reports. Labels take bounded
// values only: codes, operations, outcomes, roles; never a room or user.
var (
	descInfo          = desc("meshchat_node_info", "Always 1: the node's name and broker.", "node", "broker")
	descConnections   = desc("meshchat_connections", "Client connections open on this node.")
	descQueueBytes    = desc("meshchat_queue_bytes", "Bytes waiting in the connections' outbound queues.")
	descPublished     = desc("meshchat_messages_published_total", "Room messages the broker accepted from this node's clients.")
	descDMs           = desc("meshchat_dms_total", "Direct messages the broker accepted from this node's clients.")
	descJoins         = desc("meshchat_joins_total", "Rooms joined by this node's connections.")
	descDeliveries    = desc("meshchat_deliveries_total", "Message and DM frames handed to this node's connections.")
	descSlow          = desc("meshchat_slow_consumer_disconnects_total", "Connections cut off because they read too slowly (close code 4008, or a reset when their socket was backlogged).")
	descRejected      = desc("meshchat_rejected_frames_total", "Client frames answered with an error frame, by error code.", "code")
	descRateLimited   = desc("meshchat_rate_limited_frames_total", "Client frames dropped for exceeding the rate limit.")
	descCloses        = desc("meshchat_connections_closed_total", "Connections ended, by WebSocket close code.", "code")
	descBrokerErrors  = desc("meshchat_broker_errors_total", "Broker calls for a client's frame that failed, by operation.", "op")
	descLogins        = desc("meshchat_logins_total", "Login attempts, by outcome: ok or the error code.", "outcome")
	descHTTPConns     = desc("meshchat_http_connections", "TCP connections open on the HTTP listener (WebSocket, event streams, keep-alive, mesh links).")
	descHTTPRefused   = desc("meshchat_http_connections_refused_total", "TCP connections to the HTTP listener closed at accept, by reason: per_ip (the address was at --max-conns-per-ip).", "reason")
	descMembers       = desc("meshchat_cluster_members", "Nodes of the cluster alive in this node's view, this one included.")
	descHealth        = desc("meshchat_memberlist_health_score", "memberlist's awareness of this node's health: 0 is healthy, higher means missed probes.")
	descGossip        = desc("meshchat_gossip_problems_total", "Warnings and errors memberlist reported (junk on the gossip port, a node with another key).")
	descTakeovers     = desc("meshchat_mesh_takeovers_total", "Channels this node took ownership of, continuing an existing stream.")
	descCreated       = desc("meshchat_mesh_channels_created_total", "Channels this node started a new stream for.")
	descLinkConnects  = desc("meshchat_mesh_link_connects_total", "Connections this node's links made to peers, reconnects included.")
	descLinkFailures  = desc("meshchat_mesh_link_dial_failures_total", "Dials to peers that failed.")
	descLinkDrops     = desc("meshchat_mesh_link_drops_total", "Connections to peers that were lost or cut.")
	descRejectedPeers = desc("meshchat_mesh_rejected_connections_total", "Connections to /_mesh/ that failed the handshake (junk, or another secret).")
	descFrameAuth     = desc("meshchat_mesh_frame_auth_failures_total", "Peer connections closed because a frame failed to decrypt (altered, replayed, or another key).")
	descTLSReloads    = desc("meshchat_tls_certificate_reloads_total", "Reloads of the TLS certificate after its files changed, by result: ok, or error (the previous certificate stays).", "result")
	descQuorum        = desc("meshchat_cluster_quorum", "1 while this node sees a majority of the cluster's voting nodes and may order rooms (mesh broker), else 0.")
	descVoters        = desc("meshchat_cluster_voters", "Voting nodes this node counts for the quorum, by state: alive or total.", "state")
	descChannels      = desc("meshchat_mesh_channels", "Channels whose stream this node keeps, by role: owner or replica.", "role")
	descRetained      = desc("meshchat_mesh_retained_messages", "Publications the channels this node keeps retain in memory (history size).")
	descRetainedBytes = desc("meshchat_history_retained_bytes", "Bytes of history the channels this node keeps retain in memory, bounded by --history-budget.")
	descEvictions     = desc("meshchat_history_evictions_total", "Channel histories evicted from memory to keep under --history-budget (to disk with --data, else dropped).")
	descUnconfirmed   = desc("meshchat_mesh_unconfirmed_publications", "Publications of the channels this node orders that wait for their backup's copy (replication lag, in publications).")
	descBusy          = desc("meshchat_mesh_busy_channels", "Channels left out of the channel and history gauges because they were busy at the scrape.")
	meshDescriptions  = []*prometheus.Desc{descQuorum, descVoters, descTakeovers, descCreated, descLinkConnects, descLinkFailures, descLinkDrops, descRejectedPeers, descFrameAuth, descChannels, descRetained, descRetainedBytes, descEvictions, descUnconfirmed, descBusy}
	commonDescription = []*prometheus.Desc{descInfo, descConnections, descQueueBytes, descPublished, descDMs, descJoins, descDeliveries,
		descSlow, descRejected, descRateLimited, descCloses, descBrokerErrors, descLogins, descHTTPConns, descHTTPRefused,
		descMembers, descHealth, descGossip}
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

func newNodeCollector(n *Node) *nodeCollector {
	return &nodeCollector{n: n, mesh: n.cfg.Broker == "mesh", tls: n.cfg.TLSCert != ""}
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range commonDescription {
		ch <- d
	}
	if c.mesh {
		for _, d := range meshDescriptions {
			ch <- d
		}
	}
	if c.tls {
		ch <- descTLSReloads
	}
}

// Collect implements prometheus.Collector. The registry serves scrapes
// only once the node is serving, when every part is set.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descInfo, 1, n.name, n.cfg.Broker)

	hs := n.hub.Stats()
	gauge(descConnections, float64(n.hub.Clients()))
	gauge(descQueueBytes, float64(n.hub.QueuedBytes()))
	counter(descPublished, hs.Published)
	counter(descDMs, hs.DMs)
	counter(descJoins, hs.Joins)
	counter(descDeliveries, hs.Deliveries)
	counter(descSlow, hs.SlowConsumers)
	counter(descRateLimited, hs.RateLimited)
	for code, v := range hs.Rejected {
		counter(descRejected, v, code)
	}
	for code, v := range hs.Closes {
		label := strconv.Itoa(code)
		if code == chat.OtherClose {
			label = chat.OtherCode
		}
		counter(descCloses, v, label)
	}
	for op, v := range hs.BrokerErrors {
		counter(descBrokerErrors, v, op)
	}
	logins := n.web.Stats().Logins
	if _, ok := logins[web.LoginOK]; !ok {
		counter(descLogins, 0, web.LoginOK) // the series exists from the start
	}
	for outcome, v := range logins {
		counter(descLogins, v, outcome)
	}

	ls := n.limit.Stats()
	gauge(descHTTPConns, float64(ls.Open))
	counter(descHTTPRefused, ls.RefusedPerIP, "per_ip")

	gauge(descMembers, float64(len(n.cluster.Alive())))
	gauge(descHealth, float64(n.cluster.HealthScore()))
	counter(descGossip, n.cluster.GossipProblems())
	if c.tls {
		counter(descTLSReloads, n.certs.loaded.Load(), "ok")
		counter(descTLSReloads, n.certs.fail.Load(), "error")
	}

	if !c.mesh {
		return
	}
	q := n.mesh.Quorum()
	gauge(descQuorum, boolGauge(q.Has))
	gauge(descVoters, float64(q.Alive), "alive")
	gauge(descVoters, float64(q.Voters), "total")
	ms := n.mesh.Stats()
	counter(descTakeovers, ms.Takeovers)
	counter(descCreated, ms.Created)
	counter(descLinkConnects, ms.LinkConnects)
	counter(descLinkFailures, ms.LinkDialFailures)
	counter(descLinkDrops, ms.LinkDrops)
	counter(descRejectedPeers, ms.RejectedPeers)
	counter(descFrameAuth, ms.FrameAuthFailures)
	gauge(descChannels, float64(ms.Owned), "owner")
	gauge(descChannels, float64(ms.Replicas), "replica")
	gauge(descRetained, float64(ms.Retained))
	gauge(descUnconfirmed, float64(ms.Unconfirmed))
	gauge(descRetainedBytes, float64(ms.RetainedBytes))
	counter(descEvictions, ms.Evictions)
	gauge(descBusy, float64(ms.Busy))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
