package chat

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/inproc"
)

// fill posts n messages of size bytes to room, each from its own sender
// (the server API limits each sender), and returns their ids.
func fill(t *testing.T, h *Hub, room string, n, size int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		text := fmt.Sprintf("%04d", i) + strings.Repeat("x", size-4)
		id, err := h.PublishAs(context.Background(), fmt.Sprint("s", i), room, text, "")
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func historyBytes(fs []frame) int {
	n := 0
	for _, f := range fs {
		n += len(f.Text)
	}
	return n
}

// A join of a room full of the largest messages answers at most
// HistoryBytes of them, and the bytes count against the connection's
// rate limit: joining it again and again is refused long before the
// frames alone would be.
func TestRepeatedJoinsOfFullRoomRateLimited(t *testing.T) {
	// The clock stands still: the buckets do not refill, however slow
	// the machine.
	now := time.Unix(1000, 0)
	h := newHub(t, nil, "n1", func(c *Config) { c.Now = func() time.Time { return now } })
	ids := fill(t, h, "big", DefaultHistoryPage, DefaultMaxTextBytes)
	alice := connect(t, h, "alice")
	j := alice.join("big")
	if n := historyBytes(j.History); n > DefaultHistoryBytes || n < DefaultHistoryBytes/2 {
		t.Fatalf("joined.history holds %d bytes of text, want at most %d", n, DefaultHistoryBytes)
	}
	if last := j.History[len(j.History)-1].ID; last != ids[len(ids)-1] {
		t.Fatalf("history ends at %s, want the newest %s", last, ids[len(ids)-1])
	}
	// A frame costs one token of the burst (110); each join of the room
	// costs 4 more, so fewer than 20 rounds of leave and join fit, where
	// the frames alone would take 55.
	for i := range 40 {
		alice.do(`{"type":"leave","room":"big"}`)
		alice.do(`{"type":"join","room":"big"}`)
		f := alice.until("joined or rate_limited", func(f frame) bool {
			return f.Type == "joined" || f.Code == CodeRateLimited
		})
		if f.Code == CodeRateLimited {
			if i < 3 {
				t.Fatalf("rate limited after %d joins, want more", i)
			}
			return
		}
	}
	t.Fatal("40 joins of a full room were never rate limited")
}

// A resume with more after its id than HistoryBytes gets the oldest that
// fit in joined.history, recovered, and the rest as message frames, then
// what comes live: no gap, no duplicate. That holds also when the rest is
// more than the outbound queue takes: it comes page by page as the client
// reads, and what is published meanwhile follows it.
func TestResumeBeyondHistoryBytes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		queue int
	}{{"queue holds it", 0}, {"paged through a small queue", 128 << 10}} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, nil, "n1", func(c *Config) {
				c.RateLimit = NoRateLimit
				if tt.queue > 0 {
					c.QueueBytes = tt.queue
				}
			})
			want := fill(t, h, "big", 200, 1000)
			bob := connect(t, h, "bob")
			done, j := resumeApart(t, bob, "big", want[9])
			if n := historyBytes(j.History); n > DefaultHistoryBytes || len(j.History) == 0 {
				t.Fatalf("joined.history holds %d bytes of text in %d messages", n, len(j.History))
			}
			got := append([]frame(nil), j.History...)
			live, err := h.PublishAs(context.Background(), "s0", "big", "live", "")
			if err != nil {
				t.Fatal(err)
			}
			for len(got) < len(want)-10+1 {
				got = append(got, bob.expect("message"))
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if w := strings.Join(append(want[10:], live), ","); ids(got) != w {
				t.Fatalf("resume delivered\n%s\nwant\n%s", ids(got), w)
			}
			bob.quiet("message", isType("message"))
			if bob.c.Disconnected() {
				t.Fatal("the resume cut the client off")
			}
		})
	}
}

// resumeApart joins room after id on a goroutine of its own, as a
// connection's reader does apart from its writer (a paged resume waits
// for its pages to be read), and returns where Handle's result comes and
// the joined frame, which must be recovered.
func resumeApart(t *testing.T, tc *tconn, room, after string) (<-chan error, frame) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- tc.c.Handle(context.Background(), []byte(fmt.Sprintf(`{"type":"join","room":%q,"after":%q}`, room, after)))
	}()
	j := tc.expect("joined")
	if j.Recovered == nil || !*j.Recovered {
		t.Fatalf("resume not recovered: %+v", j.Recovered)
	}
	return done, j
}

// A paged resume in a busy room: what is published while the pages go
// out overflows the member's buffer, and is read from the history again
// instead of cutting the client off.
func TestPagedResumeOutlastsBusyRoom(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.RateLimit = NoRateLimit; c.QueueBytes = 128 << 10 })
	want := fill(t, h, "big", 200, 1000)
	bob := connect(t, h, "bob")
	done, j := resumeApart(t, bob, "big", want[9])
	// More than the queue, while the first pages wait to be read.
	for i := range 200 {
		id, err := h.PublishAs(context.Background(), fmt.Sprint("s", i), "big", fmt.Sprintf("%04d", 1000+i)+strings.Repeat("y", 996), "")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	got := append([]frame(nil), j.History...)
	for len(got) < len(want)-10 {
		f, ok := bob.tryNext(waitFor)
		if !ok {
			t.Fatalf("after %d of %d messages: no more (disconnected: %v)", len(got), len(want)-10, bob.c.Disconnected())
		}
		if f.Type == "message" {
			got = append(got, f)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(want[10:], ","); ids(got) != w {
		t.Fatalf("resume delivered\n%s\nwant\n%s", ids(got), w)
	}
	if bob.c.Disconnected() {
		t.Fatal("the busy room cut the resuming client off")
	}
}

// historyReads counts a hub's History reads and the most publications
// one answer held.
type historyReads struct {
	*inproc.Broker
	mu          sync.Mutex
	reads, most int
}

func (b *historyReads) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	res, err := b.Broker.History(ctx, ch, req)
	b.mu.Lock()
	b.reads++
	b.most = max(b.most, len(res.Publications))
	b.mu.Unlock()
	return res, err
}

// A resume after a long absence reads the history a chunk at a time, as
// its pages go out, so that it holds about one chunk in memory: no read
// answers more than a chunk, and the client still gets every message
// once, in order, then what comes live.
func TestLongResumeReadsHistoryInChunks(t *testing.T) {
	hr := &historyReads{}
	h := newHub(t, nil, "n1", func(c *Config) {
		c.RateLimit = NoRateLimit
		c.QueueBytes = 64 << 10
		hr.Broker = c.Broker.(*inproc.Broker)
		c.Broker = hr
	})
	want := fill(t, h, "big", 900, 200)
	bob := connect(t, h, "bob")
	done, j := resumeApart(t, bob, "big", want[0])
	got := append([]frame(nil), j.History...)
	for len(got) < len(want)-1 {
		got = append(got, bob.expect("message"))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	live, err := h.PublishAs(context.Background(), "s0", "big", "live", "")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, bob.expect("message"))
	if w := strings.Join(append(want[1:], live), ","); ids(got) != w {
		t.Fatalf("resume delivered\n%s\nwant\n%s", ids(got), w)
	}
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if hr.most > resumeChunkPubs || hr.reads < (len(want)-1)/resumeChunkPubs {
		t.Fatalf("the resume read the history in %d reads of at most %d publications, want reads of at most %d",
			hr.reads, hr.most, resumeChunkPubs)
	}
}

// Each user creates at most RoomsPerHour rooms an hour; joining a room
// that has history is no creation.
func TestRoomCreationLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHub(t, nil, "n1", func(c *Config) { c.RoomsPerHour = 3; c.Now = func() time.Time { return now } })
	fill(t, h, "busy", 1, 10)
	mallory := connect(t, h, "mallory")
	for i := range 3 {
		mallory.join(fmt.Sprint("new", i))
	}
	mallory.do(`{"type":"join","room":"new3"}`)
	if f := mallory.expect("error"); f.Code != CodeTooManyRooms {
		t.Fatalf("a fourth new room: %+v, want too_many_rooms", f)
	}
	mallory.join("busy")
	// Joining one of the rooms again is no creation either... once it
	// has history; and another user has rooms of their own.
	connect(t, h, "alice").join("new3")
	now = now.Add(time.Hour)
	mallory.join("new3")
}

type names map[string]bool

func (n names) Exists(user string) bool { return n[user] }

// With a table of users, a DM to a name nobody holds is refused, on a
// connection and through the server API.
func TestDMToUnknownUser(t *testing.T) {
	h := newHub(t, nil, "n1", func(c *Config) { c.Users = names{"alice": true, "bob": true} })
	alice := connect(t, h, "alice")
	alice.do(`{"type":"dm","to":"nobody","text":"hi","ref":"r1"}`)
	if f := alice.expect("error"); f.Code != CodeNoSuchUser || f.ref() != "r1" {
		t.Fatalf("DM to an unknown name: %+v, want no_such_user", f)
	}
	alice.do(`{"type":"dm","to":"bob","text":"hi","ref":"r2"}`)
	if f := alice.expect("dm"); f.ref() != "r2" {
		t.Fatalf("DM to bob: %+v", f)
	}
	if _, err := h.DMAs(context.Background(), "alice", "nobody", "hi", ""); apiCode(t, err) != CodeNoSuchUser {
		t.Fatalf("server API DM to an unknown name: %v", err)
	}
}
