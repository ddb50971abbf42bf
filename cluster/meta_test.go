package cluster

import (
	"bytes"
	"errors"
	"testing"
)

func TestNodeMetaRoundTrip(t *testing.T) {
	tests := []NodeMeta{
		{Name: "n1", HTTP: "http://127.0.0.1:8081"},
		{Name: "n2", HTTP: "https://chat.example:443", Data: []byte{1, 2, 3}},
		{},
	}
	for _, m := range tests {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got NodeMeta
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if got.Name != m.Name || got.HTTP != m.HTTP || !bytes.Equal(got.Data, m.Data) {
			t.Errorf("round trip %+v -> %+v", m, got)
		}
	}
}

func TestNodeMetaDecode(t *testing.T) {
	good, _ := NodeMeta{Name: "a", HTTP: "h", Data: []byte("d")}.MarshalBinary()
	newer := append([]byte{2}, good[1:]...)
	newer = append(newer, 3, 'x', 'y', 'z') // a field this version does not know
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"empty", nil, false},
		{"zero version", []byte{0, 0, 0, 0}, false},
		{"truncated", good[:len(good)-1], false},
		{"huge length", []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, false},
		{"good", good, true},
		{"newer version with extra field", newer, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m NodeMeta
			err := m.UnmarshalBinary(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadMeta) {
				t.Fatalf("err = %v, want ErrBadMeta", err)
			}
			if tt.ok && (m.Name != "a" || m.HTTP != "h" || string(m.Data) != "d") {
				t.Fatalf("decoded %+v", m)
			}
		})
	}
}

func FuzzNodeMeta(f *testing.F) {
	good, _ := NodeMeta{Name: "a", HTTP: "h"}.MarshalBinary()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m NodeMeta
		if m.UnmarshalBinary(b) != nil {
			return
		}
		again, _ := m.MarshalBinary()
		var m2 NodeMeta
		if err := m2.UnmarshalBinary(again); err != nil || m2.Name != m.Name || m2.HTTP != m.HTTP || !bytes.Equal(m2.Data, m.Data) {
			t.Fatalf("re-encode mismatch: %+v vs %+v (%v)", m, m2, err)
		}
	})
}
