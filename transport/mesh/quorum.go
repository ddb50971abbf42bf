package mesh

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// The quorum: a node orders channels only while it sees a strict
// majority of the cluster's voting nodes, so the two sides of a network
// partition never both order the same channel (docs/cluster.md,
// "Partitions"). Voting nodes are every node this node has seen alive,
// itself included. A node that dies keeps its vote (the survivors cannot
// tell a crash from a partition); a node that left gracefully announced
// it and loses its vote at once. A dead node's vote is forgotten only by
// a node that has the quorum with that vote counted, once the node has
// been gone for Config.ForgetAfter: the majority side of a crash can then
// survive a second one, while an isolated node never shrinks its own
// count and never regains the quorum alone.

// DefaultForgetAfter is Config.ForgetAfter's default: the cluster's own
// retention of dead nodes (cluster.DefaultDeadRetention).
const DefaultForgetAfter = 10 * time.Minute

// Quorum is this node's standing in its view of the cluster.
type Quorum struct {
	// Has reports whether this node may order channels: it sees a strict
	// majority of Voters, or it is the lower-named node of a cluster of
	// two that sees only itself.
	Has bool
	// Voters is how many voting nodes this node counts, itself included
	// (at least Config.MinVoters until it has seen that many).
	Voters int
	// Alive is how many of them are alive in this node's view.
	Alive int
}

func (q Quorum) String() string {
	has := "no quorum"
	if q.Has {
		has = "quorum"
	}
	return fmt.Sprintf("%s: sees %d of %d voting nodes", has, q.Alive, q.Voters)
}

// voters is the voting set and the rule over it. Methods are not safe for
// concurrent use: the broker calls them under its quorumMu.
type voters struct {
	self   string
	forget time.Duration
	// last holds the voters: the zero time for those alive in the last
	// view, else when a view first lacked them.
	last map[string]time.Time
	// reached is set once the set held the floor's count: from then on
	// the set alone is the count.
	reached bool
}

func newVoters(self string, forget time.Duration) *voters {
	return &voters{self: self, forget: forget, last: map[string]time.Time{self: {}}}
}

// recountEvery is how often the membership goroutine counts the quorum
// again with no view change, so that the dead are forgotten in time:
// a quarter of ForgetAfter, at most recountMax.
func recountEvery(forget time.Duration) time.Duration {
	const recountMax = 5 * time.Second
	if forget <= 0 {
		return recountMax
	}
	return max(min(forget/4, recountMax), time.Millisecond)
}

// update applies a view (alive: the alive nodes, departed: those that
// left gracefully) at time now and returns the quorum. floor is the least
// count of voters while the set has not yet held that many; latch says
// whether reaching it may be remembered (false before the broker starts,
// when the floor is not known yet).
func (v *voters) update(alive, departed []string, floor int, latch bool, now time.Time) Quorum {
	up := make(map[string]bool, len(alive)+1)
	up[v.self] = true
	for _, n := range alive {
		up[n] = true
	}
	for n, gone := range v.last {
		if !up[n] && gone.IsZero() {
			v.last[n] = now
		}
	}
	for n := range up {
		v.last[n] = time.Time{}
	}
	for _, n := range departed {
		if !up[n] {
			delete(v.last, n)
		}
	}
	if latch && len(v.last) >= floor {
		v.reached = true
	}
	q := v.count(up, floor)
	if q.Has && v.forget > 0 {
		// Counted and still outvoted: the dead this side has waited out
		// are gone for good, so a later failure is judged without them.
		forgot := false
		for n, gone := range v.last {
			if !up[n] && now.Sub(gone) >= v.forget {
				delete(v.last, n)
				forgot = true
			}
		}
		if forgot {
			q = v.count(up, floor)
		}
	}
	return q
}

func (v *voters) count(up map[string]bool, floor int) Quorum {
	q := Quorum{Voters: len(v.last)}
	for n := range v.last {
		if up[n] {
			q.Alive++
		}
	}
	if !v.reached {
		q.Voters = max(q.Voters, floor)
	}
	q.Has = 2*q.Alive > q.Voters
	if !q.Has && q.Voters == 2 && len(v.last) == 2 && q.Alive == 1 {
		// Two nodes that lose sight of each other: one of them must go on
		// (a crash would otherwise stop the cluster), and only one may.
		// The lower name is a choice both make alike.
		names := make([]string, 0, 2)
		for n := range v.last {
			names = append(names, n)
		}
		q.Has = slices.Min(names) == v.self
	}
	return q
}

// quorumState is the broker's voting set and its last result.
type quorumState struct {
	mu sync.Mutex
	v  *voters
	q  Quorum
}

// Quorum returns this node's standing: whether it may order channels, and
// the counts behind it (for /readyz, the metrics and the admin view).
func (b *Broker) Quorum() Quorum {
	b.quorum.mu.Lock()
	defer b.quorum.mu.Unlock()
	return b.quorum.q
}

// quorate reports whether this node may order channels now.
func (b *Broker) quorate() bool { return b.hasQuorum.Load() }

// updateQuorum applies view ps to the voting set. When the result flips,
// it logs and wakes the membership goroutine, which stops ordering every
// channel when the quorum is lost, and re-registers this node's
// subscriptions when it is back.
func (b *Broker) updateQuorum(ps *peerSet) {
	var departed []string
	if b.cfg.Departed != nil {
		departed = b.cfg.Departed()
	}
	alive := make([]string, len(ps.list))
	for i, p := range ps.list {
		alive[i] = p.Name
	}
	floor := 1
	if b.cfg.MinVoters != nil {
		floor = b.cfg.MinVoters()
	}
	started := b.started.Load()
	b.quorum.mu.Lock()
	q := b.quorum.v.update(alive, departed, floor, started, time.Now())
	was := b.quorum.q
	b.quorum.q = q
	b.hasQuorum.Store(q.Has)
	b.quorum.mu.Unlock()
	if q.Has == was.Has || !started || b.closed.Load() {
		return
	}
	if q.Has {
		b.log.Info("quorum: ordering channels", "quorum", q.String())
	} else {
		b.log.Warn("no quorum: this node orders no channel and refuses what needs one until it sees a majority of the cluster", "quorum", q.String())
	}
	select {
	case b.changed <- struct{}{}:
	default:
	}
}
