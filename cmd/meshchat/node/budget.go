package node

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// The default history budget (Config.HistoryBudget) is sized to the
// machine: a quarter of the memory the process may use (the cgroup's
// limit when there is one, else the machine's total), at least
// MinHistoryBudget and at most MaxHistoryBudget.
const (
	MinHistoryBudget = 64 << 20
	MaxHistoryBudget = 4 << 30
)

// DefaultHistoryBudget is the history budget of a node given none.
func DefaultHistoryBudget() int64 {
	return budgetFor(memoryLimit(os.ReadFile))
}

// budgetFor is a quarter of mem bytes, bounded; mem 0 (unknown) gives
// MinHistoryBudget.
func budgetFor(mem int64) int64 {
	return min(max(mem/4, MinHistoryBudget), MaxHistoryBudget)
}

// memoryLimit is the smaller of the machine's memory (/proc/meminfo) and
// the cgroup's limit (v2 memory.max, else v1 memory.limit_in_bytes), in
// bytes; 0 when neither can be read. read is os.ReadFile, or a test's.
func memoryLimit(read func(string) ([]byte, error)) int64 {
	var total int64
	if b, err := read("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					total = kb << 10
				}
				break
			}
		}
	}
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := read(path)
		if err != nil {
			continue
		}
		// "max", or v1's huge number for no limit, leave total as it is.
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			total = n
		}
		break
	}
	return total
}
