package chat

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeFrame(t *testing.T) {
	long := strings.Repeat("x", 101)
	tests := []struct {
		name, in string
		code     string // "" = valid
		ref      string // ref kept for the error echo
	}{
		{"join", `{"type":"join","room":"general"}`, "", ""},
		{"join after", `{"type":"join","room":"general","after":"1-x"}`, "", ""},
		{"join unknown fields", `{"type":"join","room":"a.b-c_D9","extra":[1,{"x":2}]}`, "", ""},
		{"join bad room", `{"type":"join","room":"no spaces"}`, CodeBadRoom, ""},
		{"join no room", `{"type":"join"}`, CodeBadRoom, ""},
		{"join long room", `{"type":"join","room":"` + strings.Repeat("a", 33) + `"}`, CodeBadRoom, ""},
		{"join room 32", `{"type":"join","room":"` + strings.Repeat("a", 32) + `"}`, "", ""},
		{"leave", `{"type":"leave","room":"general"}`, "", ""},
		{"leave bad room", `{"type":"leave","room":"é"}`, CodeBadRoom, ""},
		{"send", `{"type":"send","room":"general","text":"hi","ref":"c1"}`, "", ""},
		{"send empty", `{"type":"send","room":"general","text":"","ref":"c1"}`, CodeBadText, "c1"},
		{"send blank", `{"type":"send","room":"general","text":" \n\t","ref":"c1"}`, CodeBadText, "c1"},
		{"send too long", `{"type":"send","room":"general","text":"` + long + `","ref":"r"}`, CodeBadText, "r"},
		{"send bad room", `{"type":"send","room":"","text":"hi","ref":"c9"}`, CodeBadRoom, "c9"},
		{"send text not string", `{"type":"send","room":"general","text":5,"ref":"c2"}`, CodeBadFrame, "c2"},
		{"send ref too long", `{"type":"send","room":"general","text":"hi","ref":"` + strings.Repeat("r", 65) + `"}`, CodeBadRef, ""},
		{"dm", `{"type":"dm","to":"bob","text":"hi"}`, "", ""},
		{"dm bad to", `{"type":"dm","to":"bob!","text":"hi","ref":"d"}`, CodeBadName, "d"},
		{"dm no text", `{"type":"dm","to":"bob","ref":"d"}`, CodeBadText, "d"},
		{"typing", `{"type":"typing","room":"general"}`, "", ""},
		{"typing bad room", `{"type":"typing","room":"x/y"}`, CodeBadRoom, ""},
		{"dms", `{"type":"dms","after":"5-e"}`, "", ""},
		{"ping", `{"type":"ping","ref":"p"}`, "", ""},
		{"unknown type", `{"type":"shout","ref":"u"}`, CodeUnknownType, "u"},
		{"no type", `{"room":"general"}`, CodeBadFrame, ""},
		{"type not string", `{"type":1}`, CodeBadFrame, ""},
		{"null", `null`, CodeBadFrame, ""},
		{"array", `[1,2]`, CodeBadFrame, ""},
		{"number", `42`, CodeBadFrame, ""},
		{"malformed", `{"type":"join",`, CodeBadFrame, ""},
		{"empty", ``, CodeBadFrame, ""},
		{"trailing garbage", `{"type":"ping"} x`, CodeBadFrame, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeFrame([]byte(tt.in), 100)
			switch {
			case tt.code == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.code != "" && err == nil:
				t.Fatalf("got %+v, want error %s", f, tt.code)
			case tt.code != "" && err.code != tt.code:
				t.Fatalf("code %s, want %s (%s)", err.code, tt.code, err.msg)
			}
			if tt.code != "" && f.Ref != tt.ref {
				t.Fatalf("ref %q, want %q", f.Ref, tt.ref)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "alice", "A.b-c_9", strings.Repeat("z", 32)} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range []string{"", " ", "a b", "a/b", "ä", strings.Repeat("z", 33), "a\x00", "<script>"} {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
}

func TestID(t *testing.T) {
	for _, tt := range []struct {
		off   uint64
		epoch string
	}{{1, "abc"}, {1000, ""}, {1 << 62, "x-y-z"}, {36, "e"}} {
		id := formatID(tt.off, tt.epoch)
		off, epoch, ok := parseID(id)
		if !ok || off != tt.off || epoch != tt.epoch {
			t.Errorf("parseID(formatID(%d,%q)=%q) = %d,%q,%v", tt.off, tt.epoch, id, off, epoch, ok)
		}
	}
	for _, bad := range []string{"", "-", "abc", "-e", "0-e", "!-e", "zzzzzzzzzzzzzzzzzz-e"} {
		if _, _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) ok", bad)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "ctl\x00\x01\x1f\n\r\t", "ünï€😀", "bad\xff\xfeutf8",
		"\u2028\u2029", "</script>&"} {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if !utf8.ValidString(s) {
			want = string([]rune(s)) // every bad byte -> U+FFFD, as ours
		}
		if got != want {
			t.Errorf("%q -> %s -> %q, want %q", s, b, got, want)
		}
	}
}

func TestFramesAreJSON(t *testing.T) {
	p := pubInfo{offset: 7, epoch: `ep"och`, ts: 1732280000000}
	for _, b := range [][]byte{
		appendMessage(nil, "general", p, "alice", "hi \"there\""),
		withRef(appendMessage(nil, "general", p, "alice", "hi"), "c1"),
		appendDM(nil, p, "", "alice", "bob", "yo"),
		appendDM(nil, p, `3-"other`, "alice", "bob", "yo"),
		presenceFrame("general", "bob", true),
		typingFrame("general", "bob"),
		leftFrame("general"),
		pongFrame(""), pongFrame("r"),
		ErrorFrame(CodeBadText, "text is empty", "c1"),
		welcomeFrame("alice", "n1", []string{}),
		joinedFrame("general", []string{"alice"}, [][]byte{appendMessage(nil, "general", p, "a", "b")}, true),
		dmHistoryFrame(nil, false),
	} {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if _, ok := m["type"].(string); !ok {
			t.Fatalf("%s: no type", b)
		}
	}
	var f frame
	_ = json.Unmarshal(withRef(appendMessage(nil, "general", p, "alice", "hi"), "c1"), &f)
	if f.ID != formatID(7, `ep"och`) || f.ref() != "c1" || f.TS != p.ts || f.From != "alice" {
		t.Fatalf("message frame decoded to %+v", f)
	}
	_ = json.Unmarshal(joinedFrame("g", nil, nil, false), &f)
	if f.Members == nil || f.History == nil || f.Recovered == nil {
		t.Fatalf("joined must always have members, history and recovered: %+v", f)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"general","after":"1-x"}`,
		`{"type":"send","room":"general","text":"hello","ref":"c1"}`,
		`{"type":"dm","to":"bob","text":"hi","ref":"c2"}`,
		`{"type":"typing","room":"general"}`, `{"type":"leave","room":"general"}`,
		`{"type":"dms","after":"zz-"}`, `{"type":1}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data, DefaultMaxTextBytes)
		if len(fr.Ref) > MaxRefBytes {
			t.Fatalf("ref of %d bytes kept", len(fr.Ref))
		}
		if err != nil {
			if err.code == "" || err.msg == "" {
				t.Fatalf("empty error %+v", err)
			}
			var m map[string]any
			if jerr := json.Unmarshal(ErrorFrame(err.code, err.msg, fr.Ref), &m); jerr != nil {
				t.Fatalf("error frame not JSON: %v", jerr)
			}
			return
		}
		switch fr.Type {
		case typeJoin, typeLeave, typeTyping, typeSend:
			if !ValidName(fr.Room) {
				t.Fatalf("accepted room %q", fr.Room)
			}
		case typeDM:
			if !ValidName(fr.To) {
				t.Fatalf("accepted to %q", fr.To)
			}
		case typeDMs, typePing:
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		if fr.Type == typeSend || fr.Type == typeDM {
			if strings.TrimSpace(fr.Text) == "" || len(fr.Text) > DefaultMaxTextBytes {
				t.Fatalf("accepted text of %d bytes", len(fr.Text))
			}
		}
		if _, _, ok := parseID(fr.After); ok {
			_ = formatID(1, "")
		}
	})
}
