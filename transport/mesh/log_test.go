package mesh

import "testing"

// TestBetter is the takeover's choice between two copies of a stream.
func TestBetter(t *testing.T) {
	tests := []struct {
		name string
		a, b *snapshot
		want bool
	}{
		{"anything beats nothing", &snapshot{Epoch: "e1"}, nil, true},
		{"same epoch, higher offset", &snapshot{Epoch: "e1", Offset: 5}, &snapshot{Epoch: "e1", Offset: 4}, true},
		{"same epoch, lower offset", &snapshot{Epoch: "e1", Offset: 4}, &snapshot{Epoch: "e1", Offset: 5}, false},
		{"other epoch, written later", &snapshot{Epoch: "e2", Offset: 1, LastTime: 20}, &snapshot{Epoch: "e1", Offset: 9, LastTime: 10}, true},
		{"other epoch, written earlier", &snapshot{Epoch: "e1", Offset: 9, LastTime: 10}, &snapshot{Epoch: "e2", Offset: 1, LastTime: 20}, false},
		// An epoch started while the stored copies were out of reach (a
		// restart in progress) must not erase them.
		{"empty newer epoch loses to history", &snapshot{Epoch: "e2", LastTime: 20}, &snapshot{Epoch: "e1", Offset: 9, LastTime: 10}, false},
		{"history beats an empty newer epoch", &snapshot{Epoch: "e1", Offset: 9, LastTime: 10}, &snapshot{Epoch: "e2", LastTime: 20}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := better(tt.a, tt.b); got != tt.want {
				t.Fatalf("better = %v, want %v", got, tt.want)
			}
		})
	}
}
