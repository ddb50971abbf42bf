package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport/inproc"
)

// apiCode is the code of the *Error err holds ("" for nil).
func apiCode(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *chat.Error", err)
	}
	return e.Code
}

func decodeFrames(t *testing.T, raw [][]byte) []frame {
	t.Helper()
	out := make([]frame, len(raw))
	for i, b := range raw {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("history frame %q: %v", b, err)
		}
	}
	return out
}

func TestPublishAsIsARoomMessage(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	alice := connect(t, h2, "alice")
	alice.join("general")
	alice.do(`{"type":"send","room":"general","text":"first","ref":"a1"}`)
	first := alice.until("own message", isType("message"))

	ctx := context.Background()
	id, err := h1.PublishAs(ctx, "bot", "general", "from the API", "")
	if err != nil {
		t.Fatal(err)
	}
	f := alice.until("the API's message", isType("message"))
	if f.ID != id || f.From != "bot" || f.Text != "from the API" || f.Room != "general" || f.Ref != nil {
		t.Fatalf("delivered %+v, want id %s from bot without ref", f, id)
	}
	hist, err := h1.History(ctx, "general", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeFrames(t, hist)
	if ids(got) != first.ID+","+id || got[1].Type != "message" || got[1].From != "bot" || got[1].TS != f.TS {
		t.Fatalf("history %+v, want %s then %s", got, first.ID, id)
	}
	if hist, _ := h1.History(ctx, "general", 1); ids(decodeFrames(t, hist)) != id {
		t.Fatalf("history limit 1: %s", hist)
	}
	if hist, err := h1.History(ctx, "empty", 5); err != nil || len(hist) != 0 {
		t.Fatalf("history of an empty room: %q, %v", hist, err)
	}
}

func TestPublishAsRefIsIdempotent(t *testing.T) {
	h := newHub(t, nil, "n1", nil)
	ctx := context.Background()
	id1, err := h.PublishAs(ctx, "bot", "general", "once", "job-7")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := h.PublishAs(ctx, "bot", "general", "once", "job-7")
	if err != nil || id2 != id1 {
		t.Fatalf("repeat: %q, %v; want %q", id2, err, id1)
	}
	// Without a ref every post is a message of its own.
	a, _ := h.PublishAs(ctx, "bot", "general", "twice", "")
	b, _ := h.PublishAs(ctx, "bot", "general", "twice", "")
	if a == b {
		t.Fatalf("two posts without ref share id %s", a)
	}
	hist, _ := h.History(ctx, "general", 0)
	if got := ids(decodeFrames(t, hist)); got != strings.Join([]string{id1, a, b}, ",") {
		t.Fatalf("history ids %s", got)
	}
}

func TestPublishAsValidatesLikeFrames(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.MaxTextBytes = 10 })
	ctx := context.Background()
	for _, tc := range []struct {
		name, from, room, text, ref, code string
	}{
		{"ok", "bot", "general", "hi", "", ""},
		{"bad sender", "b o t", "general", "hi", "", CodeBadName},
		{"empty sender", "", "general", "hi", "", CodeBadName},
		{"bad room", "bot", "no/room", "hi", "", CodeBadRoom},
		{"long room", "bot", strings.Repeat("r", MaxNameLen+1), "hi", "", CodeBadRoom},
		{"empty text", "bot", "general", "", "", CodeBadText},
		{"blank text", "bot", "general", " \n\t", "", CodeBadText},
		{"text too long", "bot", "general", strings.Repeat("x", 11), "", CodeBadText},
		{"ref too long", "bot", "general", "hi", strings.Repeat("r", MaxRefBytes+1), CodeBadRef},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.PublishAs(ctx, tc.from, tc.room, tc.text, tc.ref)
			if got := apiCode(t, err); got != tc.code {
				t.Fatalf("PublishAs: code %q, want %q (%v)", got, tc.code, err)
			}
			_, err = h.DMAs(ctx, tc.from, tc.room, tc.text, tc.ref)
			want := tc.code
			if want == CodeBadRoom {
				want = CodeBadName // the recipient
			}
			if got := apiCode(t, err); got != want {
				t.Fatalf("DMAs: code %q, want %q (%v)", got, want, err)
			}
		})
	}
	if _, err := h.History(ctx, "no room", 1); apiCode(t, err) != CodeBadRoom {
		t.Fatalf("History: %v", err)
	}
	if _, err := h.Presence(ctx, ""); apiCode(t, err) != CodeBadRoom {
		t.Fatalf("Presence: %v", err)
	}
	if err := h.DisconnectUser(ctx, "a b"); apiCode(t, err) != CodeBadName {
		t.Fatalf("DisconnectUser: %v", err)
	}
}

func TestDMAsReachesBothUsers(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	bob := connect(t, h2, "bob")
	bot := connect(t, h2, "bot")
	id, err := h1.DMAs(context.Background(), "bot", "bob", "psst", "")
	if err != nil {
		t.Fatal(err)
	}
	f := bob.until("the DM", isType("dm"))
	if f.From != "bot" || f.To != "bob" || f.Text != "psst" || f.Ref != nil {
		t.Fatalf("bob got %+v", f)
	}
	// The sender's own connections get their copy, with the id returned.
	if f := bot.until("the DM", isType("dm")); f.ID != id || f.To != "bob" {
		t.Fatalf("bot got %+v, want id %s", f, id)
	}
}

func TestDisconnectUserOnEveryNode(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	a1, a2 := connect(t, h1, "alice"), connect(t, h2, "alice")
	bob := connect(t, h2, "bob")
	a2.join("general")
	bob.join("general")
	if err := h1.DisconnectUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*tconn{a1, a2} {
		a.disconnected("DisconnectUser")
		if code, _ := a.c.CloseReason(); code != CloseDisconnected {
			t.Fatalf("close code %d, want %d", code, CloseDisconnected)
		}
	}
	if bob.c.Disconnected() {
		t.Fatal("bob was disconnected too")
	}
	// A user with no connection anywhere: nothing to do, no error.
	if err := h1.DisconnectUser(context.Background(), "nobody"); err != nil {
		t.Fatal(err)
	}
}

func TestRoomsAndPresence(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	a := connect(t, h1, "alice")
	b, c := connect(t, h2, "bob"), connect(t, h2, "carol")
	a.join("general")
	b.join("general")
	c.join("general")
	c.join("side")
	a.until("carol online", func(f frame) bool { return f.Type == "presence" && f.User == "carol" })

	everyone := []string{"alice", "bob", "carol"}
	if got := h1.Rooms(); !reflect.DeepEqual(got, []RoomInfo{{Name: "general", Members: 3, Local: 1, Online: everyone}}) {
		t.Fatalf("n1 rooms %+v", got)
	}
	want := []RoomInfo{{Name: "general", Members: 3, Local: 2, Online: everyone}, {Name: "side", Members: 1, Local: 1, Online: []string{"carol"}}}
	if got := h2.Rooms(); !reflect.DeepEqual(got, want) {
		t.Fatalf("n2 rooms %+v, want %+v", got, want)
	}
	// Presence is the broker's, cluster-wide, also where no one is local.
	users, err := h1.Presence(context.Background(), "side")
	if err != nil || !slices.Equal(users, []string{"carol"}) {
		t.Fatalf("presence of side on n1: %v, %v", users, err)
	}
	if users, _ := h1.Presence(context.Background(), "nowhere"); users == nil || len(users) != 0 {
		t.Fatalf("presence of an empty room: %#v", users)
	}
}

func TestPublishAsRateLimitPerSender(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := newHub(t, nil, "n1", func(c *Config) {
		c.RateLimit, c.RateBurst = 1, 2
		c.Now = func() time.Time { return now }
	})
	ctx := context.Background()
	for i := range 3 {
		_, err := h.PublishAs(ctx, "bot", "general", fmt.Sprint("m", i), "")
		if want := map[bool]string{true: CodeRateLimited, false: ""}[i == 2]; apiCode(t, err) != want {
			t.Fatalf("post %d: %v, want %q", i, err, want)
		}
	}
	if _, err := h.DMAs(ctx, "bot", "bob", "hi", ""); apiCode(t, err) != CodeRateLimited {
		t.Fatalf("DM over the limit: %v", err)
	}
	if _, err := h.PublishAs(ctx, "other", "general", "hi", ""); err != nil {
		t.Fatalf("another sender: %v", err)
	}

	// The buckets are bounded: a full table forgets those that refilled,
	// and when none has, all of them.
	buckets := func() int {
		return h.senders.len()
	}
	fill := func() {
		for i := buckets(); i < limitsMost; i++ {
			_, _ = h.PublishAs(ctx, fmt.Sprint("s", i), "general", "hi", "")
		}
	}
	fill()
	if _, err := h.PublishAs(ctx, "early", "general", "hi", ""); err != nil || buckets() != 1 {
		t.Fatalf("a full table of busy senders: %d buckets kept (%v), want 1", buckets(), err)
	}
	fill()
	now = now.Add(10 * time.Second)
	_, _ = h.PublishAs(ctx, "s5", "general", "hi", "") // busy again
	if _, err := h.PublishAs(ctx, "late", "general", "hi", ""); err != nil || buckets() != 2 {
		t.Fatalf("a full table of refilled senders: %d buckets kept (%v), want s5's and late's", buckets(), err)
	}
}
