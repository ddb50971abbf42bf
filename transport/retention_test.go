package transport

import (
	"strings"
	"testing"
	"time"
)

func TestFillRetention(t *testing.T) {
	for _, tt := range []struct {
		name        string
		size        int
		age, dedupe time.Duration
		wantErr     string
		wantSize    int
		wantAge     time.Duration
		wantDedupe  time.Duration
	}{
		{name: "defaults", wantSize: DefaultHistorySize, wantDedupe: DefaultDedupeWindow},
		{name: "kept", size: 5, age: time.Hour, dedupe: time.Second, wantSize: 5, wantAge: time.Hour, wantDedupe: time.Second},
		{name: "negative size", size: -1, wantErr: "x broker: negative HistorySize"},
		{name: "negative age", age: -time.Second, wantErr: "x broker: negative HistoryMaxAge"},
		{name: "negative dedupe", dedupe: -time.Second, wantErr: "x broker: negative DedupeWindow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			size, age, dedupe := tt.size, tt.age, tt.dedupe
			err := FillRetention("x broker", &size, &age, &dedupe)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || size != tt.wantSize || age != tt.wantAge || dedupe != tt.wantDedupe {
				t.Fatalf("got %d %v %v %v", size, age, dedupe, err)
			}
		})
	}
}
