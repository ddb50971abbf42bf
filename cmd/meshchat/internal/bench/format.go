package bench

import (
	"fmt"
	"math"
	"strconv"
)

// fmtMicros formats a duration given in µs with a unit that keeps three
// significant figures readable: 850µs, 1.23ms, 12.3ms, 1.23s.
func fmtMicros(us float64) string { return scaled(us, [3]string{"µs", "ms", "s"}) }

// fmtRate formats a per-second figure: 950/s, 12.3k/s, 1.23M/s.
func fmtRate(v float64) string { return scaled(v, [3]string{"/s", "k/s", "M/s"}) }

// scaled formats v (≥ 0) in the first of units, each 1000 times the one
// before, in which it is below 1000: whole numbers in units[0], three
// significant figures in the others.
func scaled(v float64, units [3]string) string {
	switch {
	case v < 1000:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + units[0]
	case v < 1e6:
		return sig3(v/1e3) + units[1]
	default:
		return sig3(v/1e6) + units[2]
	}
}

// sig3 prints v with three significant figures (v ≥ 1).
func sig3(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

// fmtBytes formats a byte figure in IEC units.
func fmtBytes(v float64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	var s string
	switch {
	case v < 1024:
		s = strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " B"
	case v < 1<<20:
		s = sig3(v/1024) + " KiB"
	default:
		s = sig3(v/(1<<20)) + " MiB"
	}
	if neg {
		s = "-" + s
	}
	return s
}

// fmtCount formats an integer count.
func fmtCount(v float64) string { return strconv.FormatFloat(math.Round(v), 'f', -1, 64) }

// fmtCPU formats µs of CPU per delivery.
func fmtCPU(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64) + "µs"
	}
	return sig3(v) + "µs"
}

// fmtRatio formats b/a ("redis/mesh"): "-" when a figure is missing,
// "=" when both are zero, "∞" when only a is zero.
func fmtRatio(a, b float64, okA, okB bool) string {
	switch {
	case !okA || !okB:
		return "-"
	case a == 0 && b == 0:
		return "="
	case a == 0:
		return "∞"
	}
	r := b / a
	if r >= 100 {
		return fmt.Sprintf("%.0fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}
