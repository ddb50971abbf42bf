package web

import "testing"

func TestPositions(t *testing.T) {
	rooms := []string{"general", "random"}
	for _, tc := range []struct {
		name   string
		resume string
		frames []string
		want   string
	}{
		{"parse and write", "random:2-e,general:1-e,@:3-e", nil, "general:1-e,random:2-e,@:3-e"},
		{"rooms of the stream only", "other:1-e,general:1-e", nil, "general:1-e"},
		{"malformed entries dropped", "general,:1-e,random:,@:a:b,general:5-e", nil, "general:5-e"},
		{"a message moves its room", "general:1-e", []string{
			`{"type":"message","room":"general","id":"2-e","from":"a","text":"x","ts":1}`,
		}, "general:2-e"},
		{"joined: the last of its history", "", []string{
			`{"type":"joined","room":"random","members":[],"history":[{"id":"4-e"},{"id":"5-e"}],"recovered":false}`,
		}, "random:5-e"},
		{"joined, recovered, nothing new: unchanged", "random:5-e", []string{
			`{"type":"joined","room":"random","members":[],"history":[],"recovered":true}`,
		}, "random:5-e"},
		{"joined, not recovered, empty: no position", "random:5-e", []string{
			`{"type":"joined","room":"random","members":[],"history":[],"recovered":false}`,
		}, ""},
		// A DM that arrives live before dm_history may be newer than
		// those the history is about to bring: it must not move the
		// inbox past them.
		{"a live DM before dm_history", "@:1-e", []string{
			`{"type":"dm","id":"9-e","from":"a","to":"b","text":"x","ts":1}`,
		}, "@:1-e"},
		{"DMs after dm_history", "@:1-e", []string{
			`{"type":"dm_history","history":[{"id":"2-e"}],"recovered":true}`,
			`{"type":"dm","id":"3-e","from":"a","to":"b","text":"x","ts":1}`,
		}, "@:3-e"},
		{"other frames move nothing", "general:1-e", []string{
			`{"type":"presence","room":"general","user":"a","online":true}`,
			`{"type":"error","code":"bad_room","message":"x"}`,
		}, "general:1-e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := parsePositions(tc.resume, rooms)
			for _, f := range tc.frames {
				if sf, ok := inspect([]byte(f)); ok {
					p.update(sf)
				}
			}
			if got := p.String(); got != tc.want {
				t.Fatalf("positions %q, want %q", got, tc.want)
			}
		})
	}
}
