package inproc

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Network is the state shared by the brokers of one in-memory cluster. The
// zero value is not usable; call NewNetwork.
type Network struct {
	mu       sync.Mutex
	channels map[string]*channel
	nodes    map[string]*Broker                        // open brokers by node name
	presence map[string]map[string]map[string]struct{} // channel -> user -> node set
}

// NewNetwork returns an empty in-memory cluster.
func NewNetwork() *Network {
	return &Network{
		channels: make(map[string]*channel),
		nodes:    make(map[string]*Broker),
		presence: make(map[string]map[string]map[string]struct{}),
	}
}

// channel returns the state of name, creating it (with a fresh epoch) on
// first use.
func (n *Network) channel(name string) *channel {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.channels[name]
	if c == nil {
		c = &channel{
			name:   name,
			epoch:  newEpoch(),
			dedupe: make(map[string]transport.Publication),
			subs:   make(map[*Broker]struct{}),
		}
		n.channels[name] = c
	}
	return c
}

func (n *Network) register(b *Broker) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.nodes[b.node]; ok {
		return ErrNodeTaken
	}
	n.nodes[b.node] = b
	return nil
}

// unregister forgets b and every presence it recorded: a node that leaves
// takes its users with it.
func (n *Network) unregister(b *Broker) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[b.node] == b {
		delete(n.nodes, b.node)
	}
	for ch, users := range n.presence {
		for user, nodes := range users {
			delete(nodes, b.node)
			if len(nodes) == 0 {
				delete(users, user)
			}
		}
		if len(users) == 0 {
			delete(n.presence, ch)
		}
	}
}

func (n *Network) addPresence(ch, user, node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	users := n.presence[ch]
	if users == nil {
		users = make(map[string]map[string]struct{})
		n.presence[ch] = users
	}
	nodes := users[user]
	if nodes == nil {
		nodes = make(map[string]struct{})
		users[user] = nodes
	}
	nodes[node] = struct{}{}
}

func (n *Network) removePresence(ch, user, node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	users := n.presence[ch]
	nodes := users[user]
	delete(nodes, node)
	if len(nodes) == 0 {
		delete(users, user)
	}
	if len(users) == 0 {
		delete(n.presence, ch)
	}
}

func (n *Network) presenceOf(ch string) map[string][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string][]string, len(n.presence[ch]))
	for user, nodes := range n.presence[ch] {
		list := make([]string, 0, len(nodes))
		for node := range nodes {
			list = append(list, node)
		}
		slices.Sort(list)
		out[user] = list
	}
	return out
}

// channel is one channel's order, history and delivery queue. All fields
// are guarded by mu.
type channel struct {
	name string

	mu      sync.Mutex
	epoch   string
	offset  uint64
	history []transport.Publication // oldest first, at most the publisher's HistorySize

	// dedupe maps idempotency keys to the publication they produced;
	// dedupeOrder holds the same keys oldest first, so expiry is a scan
	// from the front (every key lives for the same window).
	dedupe      map[string]transport.Publication
	dedupeOrder []dedupeRef

	subs       map[*Broker]struct{}
	pending    []transport.Publication // ordered, not yet delivered
	delivering bool                    // a goroutine is draining pending
}

type dedupeRef struct {
	key     string
	expires time.Time
}

// expireDedupe drops idempotency keys older than their window.
func (c *channel) expireDedupe(now time.Time) {
	i := 0
	for ; i < len(c.dedupeOrder) && !now.Before(c.dedupeOrder[i].expires); i++ {
		delete(c.dedupe, c.dedupeOrder[i].key)
	}
	if i > 0 {
		c.dedupeOrder = slices.Delete(c.dedupeOrder, 0, i)
	}
}

// trim enforces the count and age limits on the retained history.
func (c *channel) trim(size int, cutoff int64) {
	drop := 0
	if len(c.history) > size {
		drop = len(c.history) - size
	}
	for drop < len(c.history) && c.history[drop].Time < cutoff {
		drop++
	}
	if drop > 0 {
		// Reslice, clearing what is dropped so payloads can be collected;
		// append reallocates (copying only the retained tail) once the
		// shrinking capacity runs out, which keeps trimming O(1) amortized.
		clear(c.history[:drop])
		c.history = c.history[drop:]
	}
}

// deliver drains the channel's queue if no other goroutine is doing so.
// It must be called without c.mu held.
func (c *channel) deliver() {
	c.mu.Lock()
	if c.delivering {
		c.mu.Unlock()
		return
	}
	c.delivering = true
	for len(c.pending) > 0 {
		batch := c.pending
		c.pending = nil
		subs := slices.AppendSeq(make([]*Broker, 0, len(c.subs)), maps.Keys(c.subs))
		c.mu.Unlock()
		for _, pub := range batch {
			for _, b := range subs {
				b.handle(c.name, pub)
			}
		}
		c.mu.Lock()
	}
	c.delivering = false
	c.mu.Unlock()
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
