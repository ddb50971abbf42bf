package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// metric is one row of the results table.
type metric struct {
	name string
	get  func(Result) (float64, bool)
	fmt  func(float64) string
}

func hasLoad(r Result) bool { return r.Params.Publishers > 0 && r.Error == "" }

// metrics lists the table rows, in the order the docs' targets use.
func metrics() []metric {
	lat := func(pick func(Percentiles) int64) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) { return float64(pick(r.Latency)), r.Latency.Count > 0 }
	}
	conn := func(pick func(Percentiles) int64) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) { return float64(pick(r.Connect)), r.Connect.Count > 0 }
	}
	load := func(pick func(Result) float64) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) { return pick(r), hasLoad(r) }
	}
	srv := func(pick func(*ServerStats) float64, needLoad bool) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) {
			if r.Server == nil || r.Error != "" || (needLoad && !hasLoad(r)) {
				return 0, false
			}
			return pick(r.Server), true
		}
	}
	return []metric{
		{"deliveries/s", load(func(r Result) float64 { return r.DeliveriesPerSec }), fmtRate},
		{"latency p50", lat(func(p Percentiles) int64 { return p.P50 }), fmtMicros},
		{"latency p95", lat(func(p Percentiles) int64 { return p.P95 }), fmtMicros},
		{"latency p99", lat(func(p Percentiles) int64 { return p.P99 }), fmtMicros},
		{"latency max", lat(func(p Percentiles) int64 { return p.Max }), fmtMicros},
		{"acked sends", load(func(r Result) float64 { return float64(r.Acked) }), fmtCount},
		{"lost", load(func(r Result) float64 { return float64(r.Lost) }), fmtCount},
		{"duplicated", load(func(r Result) float64 { return float64(r.Duplicated) }), fmtCount},
		{"unrecovered", func(r Result) (float64, bool) { return float64(r.UnrecoveredMessages), hasLoad(r) && r.Unrecovered > 0 }, fmtCount},
		{"disconnects", func(r Result) (float64, bool) { return float64(r.Disconnects), r.Error == "" }, fmtCount},
		{"connect p50", conn(func(p Percentiles) int64 { return p.P50 }), fmtMicros},
		{"connect p99", conn(func(p Percentiles) int64 { return p.P99 }), fmtMicros},
		{"server CPU/delivery", srv(func(s *ServerStats) float64 { return s.CPUPerDelivery }, true), fmtCPU},
		{"RSS/conn idle", srv(func(s *ServerStats) float64 { return s.IdleBytesPerConn }, false), fmtBytes},
		{"RSS/conn under load", srv(func(s *ServerStats) float64 { return s.LoadBytesPerConn }, true), fmtBytes},
		{"bench CPU/delivery", load(func(r Result) float64 { return r.Bench.CPUPerDelivery }), fmtCPU},
	}
}

// table builds the results as a header and rows of cells. With compare
// (two or more brokers), runs are grouped by scenario with one column per
// broker and a ratio column last/first; otherwise one column per run.
func table(runs []Result, compare []string) (header []string, rows [][]string) {
	ms := metrics()
	if len(compare) >= 2 {
		header = append([]string{"scenario", "metric"}, compare...)
		header = append(header, compare[len(compare)-1]+"/"+compare[0])
		for _, sc := range scenarioOrder(runs) {
			byBroker := map[string]Result{}
			for _, r := range runs {
				if r.Scenario == sc {
					byBroker[r.Broker] = r
				}
			}
			labelled := false
			for _, m := range ms {
				row := []string{"", m.name}
				var first, last float64
				var okFirst, okLast bool
				for j, b := range compare {
					r, found := byBroker[b]
					v, ok := m.get(r)
					ok = ok && found
					row = append(row, cell(m, v, ok))
					if j == 0 {
						first, okFirst = v, ok
					}
					if j == len(compare)-1 {
						last, okLast = v, ok
					}
				}
				row = append(row, fmtRatio(first, last, okFirst, okLast))
				if allBlank(row[2:]) {
					continue
				}
				if !labelled {
					row[0], labelled = sc, true
				}
				rows = append(rows, row)
			}
		}
		return header, rows
	}
	header = []string{"metric"}
	for _, r := range runs {
		header = append(header, runLabel(r))
	}
	for _, m := range ms {
		row := []string{m.name}
		for _, r := range runs {
			v, ok := m.get(r)
			row = append(row, cell(m, v, ok))
		}
		if !allBlank(row[1:]) {
			rows = append(rows, row)
		}
	}
	return header, rows
}

func cell(m metric, v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return m.fmt(v)
}

func allBlank(cells []string) bool {
	for _, c := range cells {
		if c != "-" && c != "=" {
			return false
		}
	}
	return true
}

func runLabel(r Result) string {
	if r.Broker == "" {
		return r.Scenario
	}
	return r.Scenario + " (" + r.Broker + ")"
}

func scenarioOrder(runs []Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range runs {
		if !seen[r.Scenario] {
			seen[r.Scenario] = true
			out = append(out, r.Scenario)
		}
	}
	return out
}

// writeText prints the table aligned, plus one line per run describing
// its shape and any error.
func writeText(w io.Writer, runs []Result, compare []string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header, rows := table(runs, compare)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, r := range runs {
		fmt.Fprintf(w, "%s: %s\n", runLabel(r), describe(r))
	}
	return nil
}

// describe is a one-line summary of a run's shape and anomalies.
func describe(r Result) string {
	p := r.Params
	var b strings.Builder
	fmt.Fprintf(&b, "%d nodes, %d clients, %d rooms", r.Nodes, p.Clients, p.Rooms)
	if p.Publishers > 0 {
		fmt.Fprintf(&b, ", %d publishers x %g msg/s, %d B, %gs (+%gs warm-up)", p.Publishers, p.Rate, p.Size, p.DurationS, p.WarmupS)
		if p.SlowClients > 0 {
			fmt.Fprintf(&b, ", %d slow clients (%d disconnects)", p.SlowClients, r.SlowDisconnects)
		}
		fmt.Fprintf(&b, "; sent %d, acked %d, expected %d deliveries, resumed %d", r.Sent, r.Acked, r.Expected, r.Resumed)
	}
	if r.SendFailed > 0 {
		fmt.Fprintf(&b, ", send failed %d", r.SendFailed)
	}
	if len(r.CloseCodes) > 0 {
		fmt.Fprintf(&b, ", close codes %v", r.CloseCodes)
	}
	if r.Unrecovered > 0 {
		fmt.Fprintf(&b, ", unrecovered resumes %d (%d deliveries in their gaps)", r.Unrecovered, r.UnrecoveredMessages)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, ", errors %v", r.Errors)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "; FAILED: %s", r.Error)
	}
	return b.String()
}

// writeJSON writes the report to path.
func writeJSON(path string, rep Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// SVG layout.
const (
	svgPanelH  = 240
	svgMarginL = 70
	svgMarginT = 40
	svgGroupW  = 120
)

var svgColors = [...]string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2"}

// svgChart draws two panels: latency percentiles per run on a log scale,
// and deliveries per second per run.
func svgChart(runs []Result) string {
	var load []Result
	for _, r := range runs {
		if r.Latency.Count > 0 {
			load = append(load, r)
		}
	}
	width := max(480, svgMarginL+40+len(load)*svgGroupW)
	height := 2*(svgPanelH+svgMarginT+50) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	if len(load) == 0 {
		fmt.Fprintf(&b, `<text x="20" y="40">no load runs to chart</text></svg>`+"\n")
		return b.String()
	}

	// Panel 1: latency, log10 scale over whole decades of µs.
	top := svgMarginT
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">Delivery latency (log scale)</text>`+"\n", svgMarginL, top-16)
	lo, hi := math.Inf(1), 0.0
	for _, r := range load {
		lo = min(lo, float64(max(r.Latency.P50, 1)))
		hi = max(hi, float64(max(r.Latency.Max, 1)))
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	y := func(v float64) float64 {
		f := (math.Log10(max(v, 1)) - dlo) / (dhi - dlo)
		return float64(top+svgPanelH) - f*svgPanelH
	}
	for d := dlo; d <= dhi; d++ {
		yy := y(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, svgMarginL, width-20, yy, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", svgMarginL-6, yy+4, fmtMicros(math.Pow(10, d)))
	}
	names := []string{"p50", "p95", "p99", "max"}
	barW := float64(svgGroupW-30) / float64(len(names))
	for i, r := range load {
		vals := []int64{r.Latency.P50, r.Latency.P95, r.Latency.P99, r.Latency.Max}
		x0 := float64(svgMarginL + 20 + i*svgGroupW)
		for j, v := range vals {
			yy := y(float64(v))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x0+float64(j)*barW, yy, barW-2, float64(top+svgPanelH)-yy, svgColors[j], html.EscapeString(runLabel(r)), names[j], fmtMicros(float64(v)))
		}
		label(&b, x0+float64(svgGroupW-30)/2, float64(top+svgPanelH+16), r)
	}
	for j, n := range names {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			width-230+j*52, top-26, svgColors[j], width-216+j*52, top-17, n)
	}

	// Panel 2: deliveries per second, linear from zero.
	top += svgPanelH + svgMarginT + 50
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">Deliveries per second</text>`+"\n", svgMarginL, top-16)
	peak := 0.0
	for _, r := range load {
		peak = max(peak, r.DeliveriesPerSec)
	}
	peak = niceCeil(peak)
	for k := 0; k <= 4; k++ {
		v := peak * float64(k) / 4
		yy := float64(top+svgPanelH) - float64(k)/4*svgPanelH
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, svgMarginL, width-20, yy, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", svgMarginL-6, yy+4, fmtRate(v))
	}
	for i, r := range load {
		x0 := float64(svgMarginL + 20 + i*svgGroupW)
		h := 0.0
		if peak > 0 {
			h = r.DeliveriesPerSec / peak * svgPanelH
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %s</title></rect>`+"\n",
			x0, float64(top+svgPanelH)-h, svgGroupW-32, h, svgColors[0], html.EscapeString(runLabel(r)), fmtRate(r.DeliveriesPerSec))
		label(&b, x0+float64(svgGroupW-30)/2, float64(top+svgPanelH+16), r)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func label(b *strings.Builder, x, y float64, r Result) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, y, html.EscapeString(r.Scenario))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`+"\n", x, y+14, html.EscapeString(r.Broker))
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// writeHTML writes a self-contained page: the table, run details and
// the chart inline.
func writeHTML(path string, rep Report) error {
	var b strings.Builder
	b.WriteString(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshchat bench</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child,td:nth-child(2){text-align:left}
th{background:#f4f4f4}
.meta{color:#555}
</style></head><body>
<h1>meshchat bench</h1>
`)
	fmt.Fprintf(&b, `<p class="meta">Generated %s on %d CPUs (%s, %s).</p>`+"\n",
		rep.Generated.Format("2006-01-02 15:04:05 MST"), rep.Host.CPUs, html.EscapeString(rep.Host.GOOS), html.EscapeString(rep.Host.GoVersion))
	header, rows := table(rep.Runs, rep.Compare)
	b.WriteString("<table><tr>")
	for _, h := range header {
		fmt.Fprintf(&b, "<th>%s</th>", html.EscapeString(h))
	}
	b.WriteString("</tr>\n")
	for _, row := range rows {
		b.WriteString("<tr>")
		for _, c := range row {
			fmt.Fprintf(&b, "<td>%s</td>", html.EscapeString(c))
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n<ul>\n")
	for _, r := range rep.Runs {
		fmt.Fprintf(&b, "<li><b>%s</b>: %s</li>\n", html.EscapeString(runLabel(r)), html.EscapeString(describe(r)))
	}
	b.WriteString("</ul>\n")
	b.WriteString(svgChart(rep.Runs))
	b.WriteString("</body></html>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
