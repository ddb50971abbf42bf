package chat

import (
	"context"
	"strings"
	"testing"

	"github.com/meshchat/meshchat/transport/inproc"
)

// adminIs makes user the only admin.
func adminIs(user string) func(*Config) {
	return func(c *Config) { c.IsAdmin = func(u string) bool { return u == user } }
}

// say sends text to room from tc and returns the acknowledged message.
func (tc *tconn) say(room, text string) frame {
	tc.t.Helper()
	tc.do(`{"type":"send","room":%q,"text":%q,"ref":"say"}`, room, text)
	return tc.until("ack of "+text, func(f frame) bool { return f.Type == "message" && f.ref() == "say" && f.Text == text })
}

// aliceOnTwoNodes starts hubs n1 and n2 on one network, with alice on n1
// in room general.
func aliceOnTwoNodes(t *testing.T) (h1, h2 *Hub, alice *tconn) {
	net := inproc.NewNetwork()
	h1, h2 = newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	alice = connect(t, h1, "alice")
	alice.join("general")
	return h1, h2, alice
}

// deletes has tc delete message id of general and waits for the deletion.
func (tc *tconn) deletes(id string) {
	tc.t.Helper()
	tc.do(`{"type":"delete","room":"general","id":%q}`, id)
	tc.until("deleted", isDeleted(id))
}

func isDeleted(id string) func(frame) bool {
	return func(f frame) bool { return f.Type == "deleted" && f.ID == id }
}

func TestDeleteLive(t *testing.T) {
	_, h2, alice := aliceOnTwoNodes(t)
	bob := connect(t, h2, "bob")
	bob.join("general")
	m := alice.say("general", "oops, wrong room")
	bob.until("the message", isType("message"))

	alice.do(`{"type":"delete","room":"general","id":%q,"ref":"d1"}`, m.ID)
	if f := alice.until("deleted", isDeleted(m.ID)); f.Room != "general" || f.By != "alice" || f.ref() != "d1" {
		t.Fatalf("alice got %+v, want deleted by alice with ref d1", f)
	}
	if f := bob.until("deleted", isDeleted(m.ID)); f.Room != "general" || f.By != "alice" || f.Ref != nil {
		t.Fatalf("bob got %+v, want deleted by alice without ref", f)
	}
	if n := h2.Stats().Deliveries; n != 1 {
		t.Fatalf("n2 counts %d deliveries, want 1: the message, not its deletion", n)
	}

	// The frame again, as a client retries it from a new connection that
	// missed the ack: acknowledged, stored once.
	again := connect(t, h2, "alice")
	again.do(`{"type":"join","room":"general","after":%q}`, m.ID)
	again.expect("joined")
	again.expect("deleted")
	again.do(`{"type":"delete","room":"general","id":%q,"ref":"d1"}`, m.ID)
	if f := again.next(); f.Type != "deleted" || f.ID != m.ID || f.ref() != "d1" {
		t.Fatalf("retry answered %+v", f)
	}
	bob.quiet("a second deleted frame", isType("deleted"))
}

func TestDeleteLeavesHistory(t *testing.T) {
	h1, h2, alice := aliceOnTwoNodes(t)
	keep1 := alice.say("general", "one")
	gone := alice.say("general", "two")
	keep2 := alice.say("general", "three")
	alice.deletes(gone.ID)

	want := keep1.ID + "," + keep2.ID
	bob := connect(t, h2, "bob")
	if j := bob.join("general"); ids(j.History) != want {
		t.Fatalf("fresh join history %s, want %s", ids(j.History), want)
	}
	bob.quiet("a deleted frame on a fresh join", isType("deleted"))
	for _, h := range []*Hub{h1, h2} {
		hist, err := h.History(context.Background(), "general", 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(decodeFrames(t, hist)); got != want {
			t.Fatalf("%s: server API history %s, want %s", h.node, got, want)
		}
	}
}

func TestDeleteThenResume(t *testing.T) {
	_, h2, alice := aliceOnTwoNodes(t)
	first := alice.say("general", "one")
	seen := alice.say("general", "two")

	// bob had both; while he is away the second is deleted and another
	// message comes.
	alice.deletes(seen.ID)
	later := alice.say("general", "three")

	bob := connect(t, h2, "bob")
	bob.do(`{"type":"join","room":"general","after":%q}`, seen.ID)
	j := bob.expect("joined")
	if !*j.Recovered || ids(j.History) != later.ID {
		t.Fatalf("resume: recovered %v, history %s; want recovered with %s", *j.Recovered, ids(j.History), later.ID)
	}
	if f := bob.next(); f.Type != "deleted" || f.ID != seen.ID || f.Room != "general" || f.By != "alice" {
		t.Fatalf("after joined: %+v, want deleted %s", f, seen.ID)
	}

	// Resumed from before the deleted message, bob never had it: it is
	// left out, and there is nothing to tell.
	carol := connect(t, h2, "carol")
	carol.do(`{"type":"join","room":"general","after":%q}`, first.ID)
	if j := carol.expect("joined"); !*j.Recovered || ids(j.History) != later.ID {
		t.Fatalf("resume from before: history %s, want %s", ids(j.History), later.ID)
	}
	carol.quiet("a deleted frame for a message never had", isType("deleted"))

	// Live, after the resume: the deletion reaches both.
	alice.do(`{"type":"delete","room":"general","id":%q}`, later.ID)
	bob.until("live deleted", isDeleted(later.ID))
	carol.until("live deleted", isDeleted(later.ID))
}

func TestDeleteWhoMay(t *testing.T) {
	h := newHub(t, nil, "n1", adminIs("root"))
	alice, bob, root := connect(t, h, "alice"), connect(t, h, "bob"), connect(t, h, "root")
	for _, c := range []*tconn{alice, bob, root} {
		c.join("general")
	}
	m1 := alice.say("general", "one")
	m2 := alice.say("general", "two")

	bob.do(`{"type":"delete","room":"general","id":%q,"ref":"b"}`, m1.ID)
	if f := bob.until("error", isType("error")); f.Code != CodeForbidden || f.ref() != "b" {
		t.Fatalf("bob deleting alice's message: %+v, want %s", f, CodeForbidden)
	}
	alice.quiet("deleted after a refusal", isType("deleted"))

	root.do(`{"type":"delete","room":"general","id":%q}`, m1.ID)
	if f := alice.until("deleted", isDeleted(m1.ID)); f.By != "root" {
		t.Fatalf("deleted by %q, want root", f.By)
	}
	alice.do(`{"type":"delete","room":"general","id":%q}`, m2.ID)
	if f := bob.until("deleted", isDeleted(m2.ID)); f.By != "alice" {
		t.Fatalf("deleted by %q, want alice", f.By)
	}
}

func TestDeleteRefusals(t *testing.T) {
	h := newHub(t, nil, "n1", adminIs("root"))
	root := connect(t, h, "root")
	root.join("general")
	m := root.say("general", "hello")
	root.deletes(m.ID)
	root.say("general", "after")
	epoch := m.ID[strings.IndexByte(m.ID, '-')+1:]

	for _, tc := range []struct {
		name, frame, code string
	}{
		{"unknown id", `{"type":"delete","room":"general","id":"zz-` + epoch + `"}`, CodeNotFound},
		{"not an id", `{"type":"delete","room":"general","id":"hello"}`, CodeNotFound},
		{"other epoch", `{"type":"delete","room":"general","id":"1-x` + epoch + `"}`, CodeNotFound},
		{"the deletion itself", `{"type":"delete","room":"general","id":"2-` + epoch + `"}`, CodeNotFound},
		{"too long", `{"type":"delete","room":"general","id":"1-` + strings.Repeat("e", 300) + `"}`, CodeNotFound},
		{"message of another room", `{"type":"delete","room":"general","id":"1-` + epoch + `x"}`, CodeNotFound},
		{"no id", `{"type":"delete","room":"general"}`, CodeBadFrame},
		{"bad room", `{"type":"delete","room":"no room","id":"1-e"}`, CodeBadRoom},
		{"not joined", `{"type":"delete","room":"other","id":"1-e"}`, CodeNotJoined},
		{"id not a string", `{"type":"delete","room":"general","id":5}`, CodeBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root.do(`%s`, tc.frame)
			if f := root.next(); f.Type != "error" || f.Code != tc.code {
				t.Fatalf("answered %+v, want error %s", f, tc.code)
			}
		})
	}
}

func TestDeleteAsServerAPI(t *testing.T) {
	net := inproc.NewNetwork()
	h1, h2 := newHub(t, net, "n1", nil), newHub(t, net, "n2", nil)
	bob := connect(t, h2, "bob")
	bob.join("news")
	ctx := context.Background()
	id, err := h1.PublishAs(ctx, "cron", "news", "build is red", "")
	if err != nil {
		t.Fatal(err)
	}
	bob.until("the message", isType("message"))
	if err := h1.Delete(ctx, "news", id, ""); err != nil {
		t.Fatal(err)
	}
	if f := bob.until("deleted", isDeleted(id)); f.By != "" || f.Room != "news" {
		t.Fatalf("bob got %+v, want deleted by the operator", f)
	}
	if hist, _ := h2.History(ctx, "news", 0); len(hist) != 0 {
		t.Fatalf("history after the deletion: %s", hist)
	}
	if err := h1.Delete(ctx, "news", id, "mod"); err != nil {
		t.Fatalf("deleting again: %v", err)
	}
	for _, tc := range []struct{ name, room, id, by, code string }{
		{"bad room", "no room", id, "", CodeBadRoom},
		{"bad by", "news", id, "m o d", CodeBadName},
		{"unknown id", "news", "zz-" + id[strings.IndexByte(id, '-')+1:], "", CodeNotFound},
		{"empty id", "news", "", "", CodeNotFound},
		{"other room", "sports", id, "", CodeNotFound},
	} {
		if got := apiCode(t, h1.Delete(ctx, tc.room, tc.id, tc.by)); got != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, got, tc.code)
		}
	}
}
