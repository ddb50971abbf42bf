package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procStat is one process's cumulative CPU time and current RSS.
type procStat struct {
	Name   string
	PID    int
	CPUus  int64 // utime+stime in microseconds
	RSSKiB int64
	Err    error
}

// procSample is a reading of every process of a spawned cluster.
type procSample []procStat

func (s procSample) cpu() int64 {
	var n int64
	for _, p := range s {
		n += p.CPUus
	}
	return n
}

func (s procSample) rss() int64 {
	var n int64
	for _, p := range s {
		n += p.RSSKiB
	}
	return n
}

// readProc reads /proc/PID/stat and /proc/PID/status.
func readProc(name string, pid int) procStat {
	ps := procStat{Name: name, PID: pid}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		ps.Err = err
		return ps
	}
	ps.CPUus, ps.Err = parseStatCPU(stat)
	if ps.Err != nil {
		return ps
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		ps.Err = err
		return ps
	}
	ps.RSSKiB, ps.Err = parseStatusRSS(status)
	return ps
}

// parseStatCPU returns utime+stime in µs from /proc/PID/stat. The command
// name in parentheses may contain spaces, so fields are counted from the
// last ')'.
func parseStatCPU(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed /proc stat")
	}
	// After ")": field 3 (state) onwards; utime is field 14, stime 15.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad utime/stime in /proc stat")
	}
	return (ut + st) * (1_000_000 / clockTicks), nil
}

// parseStatusRSS returns VmRSS in KiB from /proc/PID/status.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS in /proc status")
}
