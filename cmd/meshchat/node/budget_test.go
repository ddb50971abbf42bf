package node

import (
	"errors"
	"io/fs"
	"testing"
)

func TestDefaultHistoryBudget(t *testing.T) {
	const gib = 1 << 30
	meminfo := "MemTotal:        8388608 kB\nMemFree:         1000 kB\n"
	tests := []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"machine memory", map[string]string{"/proc/meminfo": meminfo}, 2 * gib},
		{"cgroup v2 limit", map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "1073741824\n"}, gib / 4},
		{"cgroup v2 without limit", map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "max\n"}, 2 * gib},
		{"cgroup v1 limit", map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"}, 128 << 20},
		{"v1 no limit", map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"}, 2 * gib},
		{"small machine: the floor", map[string]string{"/proc/meminfo": "MemTotal: 262144 kB\n"}, MinHistoryBudget},
		{"big machine: the ceiling", map[string]string{"/proc/meminfo": "MemTotal: 268435456 kB\n"}, MaxHistoryBudget},
		{"nothing readable", nil, MinHistoryBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := func(p string) ([]byte, error) {
				if s, ok := tt.files[p]; ok {
					return []byte(s), nil
				}
				return nil, errors.New(p + ": " + fs.ErrNotExist.Error())
			}
			if got := budgetFor(memoryLimit(read)); got != tt.want {
				t.Fatalf("budget %d, want %d", got, tt.want)
			}
		})
	}
}
