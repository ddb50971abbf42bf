package bench

import "time"

// Report is the JSON document --json writes.
type Report struct {
	Version   int       `json:"version"`
	Generated time.Time `json:"generated"`
	Host      Host      `json:"host"`
	// Compare lists the brokers of a --compare run, in column order.
	Compare []string `json:"compare,omitempty"`
	Runs    []Result `json:"runs"`
}

// Host describes the machine the bench ran on.
type Host struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GoVersion string `json:"go_version"`
}

// Params are the load shape a run used.
type Params struct {
	Clients    int     `json:"clients"`
	Rooms      int     `json:"rooms"`
	Publishers int     `json:"publishers"`
	Rate       float64 `json:"rate"`
	Size       int     `json:"size"`
	DurationS  float64 `json:"duration_s"`
	WarmupS    float64 `json:"warmup_s"`
	// SlowClients read slowly during the load (see Scenario.SlowClients).
	SlowClients int `json:"slow_clients,omitempty"`
}

// Result is one scenario against one cluster.
type Result struct {
	Scenario string    `json:"scenario"`
	Broker   string    `json:"broker"`
	Nodes    int       `json:"nodes"`
	Targets  []string  `json:"targets"`
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Params   Params    `json:"params"`
	// Error is set when the run could not complete; figures are partial.
	Error string `json:"error,omitempty"`

	// ElapsedS is the measured window as it actually ran.
	ElapsedS float64 `json:"elapsed_s"`
	// Sent frames written, SendFailed frames that could not be written
	// (connection down), Acked sends echoed back with their ref.
	Sent       int64 `json:"sent"`
	SendFailed int64 `json:"send_failed"`
	Acked      int64 `json:"acked"`
	// Deliveries are unique bench messages received over the whole run;
	// WindowDeliveries those received live inside the measured window.
	Deliveries       int64   `json:"deliveries"`
	WindowDeliveries int64   `json:"window_deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	// Expected is acked messages times room members; Lost of those never
	// arrived; Duplicated copies arrived twice at one client; Resumed
	// arrived in a resume's history after a reconnect.
	Expected   int64 `json:"expected"`
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	Resumed    int64 `json:"resumed"`

	// Latency is receive time minus send time of live deliveries in the
	// window; Connect is login + upgrade + welcome. Both in µs.
	Latency Percentiles `json:"latency_us"`
	Connect Percentiles `json:"connect_us"`

	// Disconnects are connections the server ended mid-run; Reconnects
	// succeeded; Unrecovered resumes got recovered=false.
	// UnrecoveredMessages are (member, acked message) pairs that never
	// arrived and fell in the gap of an unrecovered resume: older than
	// every message that resume's history held. They are counted here, not
	// under Lost: the contract lets a room forget them. SlowDisconnects
	// are the Disconnects of slow clients.
	Disconnects         int64            `json:"disconnects"`
	SlowDisconnects     int64            `json:"slow_disconnects,omitempty"`
	Reconnects          int64            `json:"reconnects"`
	Unrecovered         int64            `json:"unrecovered"`
	UnrecoveredMessages int64            `json:"unrecovered_messages"`
	CloseCodes          map[string]int64 `json:"close_codes,omitempty"`
	Errors              map[string]int64 `json:"errors,omitempty"`

	// Server is measured only for spawned clusters.
	Server *ServerStats `json:"server,omitempty"`
	// Profiles are the node profiles written with --profile.
	Profiles []string   `json:"profiles,omitempty"`
	Bench    BenchStats `json:"bench"`
}

// BenchStats is the generator's own cost over the window.
type BenchStats struct {
	CPUMicros      int64   `json:"cpu_us"`
	CPUPerDelivery float64 `json:"cpu_us_per_delivery"`
}

// ServerStats sums the cluster's processes (nodes and redis-server).
type ServerStats struct {
	CPUMicros        int64       `json:"cpu_us"`
	CPUPerDelivery   float64     `json:"cpu_us_per_delivery"`
	RSSBaselineKiB   int64       `json:"rss_baseline_kib"`
	RSSIdleKiB       int64       `json:"rss_idle_kib"`
	RSSLoadKiB       int64       `json:"rss_load_kib,omitempty"`
	IdleBytesPerConn float64     `json:"idle_bytes_per_conn"`
	LoadBytesPerConn float64     `json:"load_bytes_per_conn,omitempty"`
	Processes        []ProcStats `json:"processes"`
}

// ProcStats is one process of the cluster.
type ProcStats struct {
	Name           string `json:"name"`
	PID            int    `json:"pid"`
	CPUMicros      int64  `json:"cpu_us"`
	RSSBaselineKiB int64  `json:"rss_baseline_kib"`
	RSSIdleKiB     int64  `json:"rss_idle_kib"`
	RSSLoadKiB     int64  `json:"rss_load_kib,omitempty"`
}

// serverStats turns /proc samples into per-delivery and per-connection
// figures. start/end are empty for idle runs.
func serverStats(baseline, idle, start, end procSample, conns, deliveries int64, isIdle bool) *ServerStats {
	s := &ServerStats{
		RSSBaselineKiB: baseline.rss(),
		RSSIdleKiB:     idle.rss(),
	}
	if conns > 0 {
		s.IdleBytesPerConn = float64(s.RSSIdleKiB-s.RSSBaselineKiB) * 1024 / float64(conns)
	}
	if !isIdle {
		s.CPUMicros = end.cpu() - start.cpu()
		s.RSSLoadKiB = end.rss()
		if deliveries > 0 {
			s.CPUPerDelivery = float64(s.CPUMicros) / float64(deliveries)
		}
		if conns > 0 {
			s.LoadBytesPerConn = float64(s.RSSLoadKiB-s.RSSBaselineKiB) * 1024 / float64(conns)
		}
	}
	for i, b := range baseline {
		p := ProcStats{Name: b.Name, PID: b.PID, RSSBaselineKiB: b.RSSKiB}
		if i < len(idle) {
			p.RSSIdleKiB = idle[i].RSSKiB
		}
		if !isIdle && i < len(start) && i < len(end) {
			p.CPUMicros = end[i].CPUus - start[i].CPUus
			p.RSSLoadKiB = end[i].RSSKiB
		}
		s.Processes = append(s.Processes, p)
	}
	return s
}
