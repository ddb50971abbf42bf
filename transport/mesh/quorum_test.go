package mesh

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// TestVoters walks the voting set through the rule's cases, each step a
// view (alive and departed nodes) at a time.
func TestVoters(t *testing.T) {
	const forget = time.Minute
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		at       time.Duration // after t0
		alive    []string
		departed []string
		floor    int
		want     Quorum
	}
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name  string
		self  string
		steps []step
	}{
		{"a node alone is a cluster of one", "a", []step{
			{alive: []string{"a"}, want: Quorum{Has: true, Voters: 1, Alive: 1}},
		}},
		{"the dead keep their vote", "a", []step{
			{alive: abc, want: Quorum{Has: true, Voters: 3, Alive: 3}},
			{at: time.Second, alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 3, Alive: 2}},
			{at: 2 * time.Second, alive: []string{"a"}, want: Quorum{Voters: 3, Alive: 1}},
		}},
		{"the isolated node never forgets, never regains it alone", "c", []step{
			{alive: abc, want: Quorum{Has: true, Voters: 3, Alive: 3}},
			{at: time.Second, alive: []string{"c"}, want: Quorum{Voters: 3, Alive: 1}},
			{at: time.Hour, alive: []string{"c"}, want: Quorum{Voters: 3, Alive: 1}},
			{at: time.Hour + time.Second, alive: abc, want: Quorum{Has: true, Voters: 3, Alive: 3}},
		}},
		{"a node that left loses its vote at once", "a", []step{
			{alive: abc, want: Quorum{Has: true, Voters: 3, Alive: 3}},
			{at: time.Second, alive: []string{"a"}, departed: []string{"b", "c"}, want: Quorum{Has: true, Voters: 1, Alive: 1}},
		}},
		{"a departed node that is alive again votes", "a", []step{
			{alive: abc, departed: []string{"b"}, want: Quorum{Has: true, Voters: 3, Alive: 3}},
		}},
		{"the majority forgets the dead after a while, then survives a second death", "a", []step{
			{alive: abc, want: Quorum{Has: true, Voters: 3, Alive: 3}},
			{at: time.Second, alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 3, Alive: 2}},
			{at: forget - time.Second, alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 3, Alive: 2}},
			{at: forget + time.Second, alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 2, Alive: 2}},
			// b dies too: of two, the lower name goes on.
			{at: forget + 2*time.Second, alive: []string{"a"}, want: Quorum{Has: true, Voters: 2, Alive: 1}},
		}},
		{"of two, the higher name alone stops", "b", []step{
			{alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 2, Alive: 2}},
			{at: time.Second, alive: []string{"b"}, want: Quorum{Voters: 2, Alive: 1}},
			{at: time.Hour, alive: []string{"b"}, want: Quorum{Voters: 2, Alive: 1}},
		}},
		{"of two, the lower name alone goes on", "a", []step{
			{alive: []string{"a", "b"}, want: Quorum{Has: true, Voters: 2, Alive: 2}},
			{at: time.Second, alive: []string{"a"}, want: Quorum{Has: true, Voters: 2, Alive: 1}},
		}},
		{"a node given seeds counts them before it sees them", "a", []step{
			{alive: []string{"a"}, floor: 3, want: Quorum{Voters: 3, Alive: 1}},
			{at: time.Second, alive: []string{"a", "b"}, floor: 3, want: Quorum{Has: true, Voters: 3, Alive: 2}},
			{at: 2 * time.Second, alive: abc, floor: 3, want: Quorum{Has: true, Voters: 3, Alive: 3}},
			// Seen them all: from now on the voters alone count, and
			// two that leave leave a cluster of one.
			{at: 3 * time.Second, alive: []string{"a"}, departed: []string{"b", "c"}, floor: 3, want: Quorum{Has: true, Voters: 1, Alive: 1}},
		}},
		{"the floor's unknown voter is no tie-break", "a", []step{
			{alive: []string{"a"}, floor: 2, want: Quorum{Voters: 2, Alive: 1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVoters(tc.self, forget)
			for i, s := range tc.steps {
				floor := max(s.floor, 1)
				if got := v.update(s.alive, s.departed, floor, true, t0.Add(s.at)); got != s.want {
					t.Fatalf("step %d (alive %v, departed %v): %+v, want %+v", i, s.alive, s.departed, got, s.want)
				}
			}
		})
	}
}

// TestVotersFloorBeforeStart: before the broker starts, the floor is not
// known yet (the seeds are resolved when gossip starts), so having
// reached the floor of then is not remembered.
func TestVotersFloorBeforeStart(t *testing.T) {
	v := newVoters("a", time.Minute)
	now := time.Now()
	if q := v.update([]string{"a"}, nil, 1, false, now); !q.Has {
		t.Fatalf("before start: %+v", q)
	}
	if q := v.update([]string{"a"}, nil, 3, true, now); q.Has || q.Voters != 3 {
		t.Fatalf("started with three seeds, alone: %+v, want no quorum of 3", q)
	}
}

// partition splits the test cluster's views into the given sides, as
// gossip does when each side declares the other dead.
func partition(c *testCluster, sides ...[]string) {
	for _, side := range sides {
		for _, n := range side {
			c.setView(n, side)
		}
	}
}

// TestPartitionMinorityRefuses partitions three nodes (n0 | n1 n2) while
// n0 owns a channel: n0 refuses to order it, n1 and n2 go on, and after
// the heal there is one stream with every acknowledged publication once,
// delivered alike on every node.
func TestPartitionMinorityRefuses(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	all := []int{0, 1, 2}
	recs, ch, _ := startOnChannel(t, bs, all...)
	ctx := t.Context()
	acked := map[string]transport.Publication{}
	pub := func(i int, key string) {
		t.Helper()
		p, err := publishRetrying(ctx, t, bs[i], ch, key, 10*time.Second)
		if err != nil {
			t.Fatalf("publish %s on n%d: %v", key, i, err)
		}
		acked[key] = p
	}
	pub(0, "before-0")
	pub(1, "before-1")

	partition(c, []string{"n0"}, []string{"n1", "n2"})
	if q := bs[0].Quorum(); q.Has || q.Voters != 3 || q.Alive != 1 {
		t.Fatalf("n0 alone: %+v, want no quorum, 1 of 3", q)
	}
	if q := bs[1].Quorum(); !q.Has {
		t.Fatalf("n1 with n2: %+v, want the quorum", q)
	}
	for _, op := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"publish", func(ctx context.Context) error {
			_, err := bs[0].Publish(ctx, ch, []byte("minority"), transport.PublishOptions{IdempotencyKey: "minority"})
			return err
		}},
		{"history", func(ctx context.Context) error {
			_, err := bs[0].History(ctx, ch, transport.HistoryRequest{})
			return err
		}},
	} {
		if err := op.do(ctx); !errors.Is(err, ErrNoQuorum) || !errors.Is(err, transport.ErrUnavailable) {
			t.Fatalf("%s on the minority: %v, want ErrNoQuorum (unavailable)", op.name, err)
		}
	}
	pub(1, "during-1")
	pub(2, "during-2")

	partition(c, []string{"n0", "n1", "n2"})
	brokertest.Eventually(t, "n0 to have the quorum again", func() bool { return bs[0].Quorum().Has })
	pub(0, "after-0")
	pub(2, "after-2")
	checkOneStream(t, bs, recs, all, ch, acked)
}

// TestUnreachableBackupAcksNothing: a publication that reached neither
// the channel's backup nor a standby is not acknowledged (its owner may be
// the minority of a partition, whose copy the majority never sees); once
// membership drops the backup, the retry is stored once. Two nodes: there
// is no standby, and n0, the lower name, goes on alone.
func TestUnreachableBackupAcksNothing(t *testing.T) {
	c, bs := newTestCluster(t, 2, nil)
	recs, ch, backup := startOnChannel(t, bs, 0)
	ctx := t.Context()
	name := bs[backup].cfg.Self.Name
	c.kill(t, name) // still listed as alive: membership has not noticed yet
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if p, err := bs[0].Publish(actx, ch, []byte("k"), transport.PublishOptions{IdempotencyKey: "k"}); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("publish with the backup unreachable: %+v, %v; want unavailable", p, err)
	}
	c.remove(name)
	p, err := publishRetrying(ctx, t, bs[0], ch, "k", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Offset != 1 {
		t.Fatalf("retry stored at offset %d, want 1", p.Offset)
	}
	if got := recs[0].WaitN(t, ch, 1); len(got) != 1 || string(got[0].Data) != "k" {
		t.Fatalf("delivered %v", brokertest.Offsets(got))
	}
}

// TestDeadForgottenByTheMajority: the two survivors of a crash forget the
// dead node once ForgetAfter has passed, with no further view change, so
// that the lower-named of them goes on after a second crash.
func TestDeadForgottenByTheMajority(t *testing.T) {
	c, bs := newTestCluster(t, 3, func(_ int, cfg *Config) { cfg.ForgetAfter = 200 * time.Millisecond })
	brokertest.StartAll(t, bs...)
	c.kill(t, "n2")
	c.remove("n2")
	if q := bs[0].Quorum(); !q.Has || q.Voters != 3 {
		t.Fatalf("right after the crash: %v, want the quorum of 3", q)
	}
	brokertest.Eventually(t, "n0 to forget n2", func() bool { return bs[0].Quorum().Voters == 2 })
	c.kill(t, "n1")
	c.remove("n1")
	if q := bs[0].Quorum(); !q.Has || q.Voters != 2 || q.Alive != 1 {
		t.Fatalf("n0 after the second crash: %v, want the quorum, 1 of 2", q)
	}
	if _, err := bs[0].Publish(t.Context(), "r:after", []byte("x"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestStandbyTakesTheCopy: while the backup is unreachable (dead, not yet
// declared so), the owner copies to the node ranked after it and goes on
// acknowledging; that copy is what survives when the owner goes too.
func TestStandbyTakesTheCopy(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	_, ch, backup := startOnChannel(t, bs)
	ctx := t.Context()
	standby := 3 - backup
	c.kill(t, bs[backup].cfg.Self.Name) // still listed as alive
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	p, err := bs[0].Publish(actx, ch, []byte("k"), transport.PublishOptions{IdempotencyKey: "k"})
	if err != nil {
		t.Fatalf("publish with the backup unreachable and a standby up: %v", err)
	}
	// The owner goes too; both leave the membership as nodes that left,
	// so that the standby, alone, has the quorum.
	c.kill(t, "n0")
	c.leave("n0")
	c.leave(bs[backup].cfg.Self.Name)
	res, err := bs[standby].History(ctx, ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Publications) != 1 || !samePub(res.Publications[0], p) {
		t.Fatalf("the standby holds %v, want the acknowledged %+v", brokertest.Offsets(res.Publications), p)
	}
}
