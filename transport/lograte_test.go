package transport

import (
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	l := LogLimit{PerSecond: 3}
	t0 := time.Unix(1000, 0)
	passed := 0
	for i := range 100 {
		if _, ok := l.Allow(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			passed++
		}
	}
	if passed != 3 {
		t.Fatalf("%d of 100 lines in one second passed, want 3", passed)
	}
	dropped, ok := l.Allow(t0.Add(1500 * time.Millisecond))
	if !ok || dropped != 97 {
		t.Fatalf("next second: ok %v, dropped %d; want true and 97", ok, dropped)
	}
	if dropped, ok := l.Allow(t0.Add(1501 * time.Millisecond)); !ok || dropped != 0 {
		t.Fatalf("dropped count not reset: %d %v", dropped, ok)
	}
}
