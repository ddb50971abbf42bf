package chat

import (
	"slices"
	"sync/atomic"
)

// Stats are the hub's counters since New, for the node's metrics, which
// read them when scraped. Every count is an atomic add where the event
// happens, at most one per publication on the fan-out path (never one per
// member), so counting costs the hot path neither a lock nor an
// allocation.
type Stats struct {
	// Published counts room messages the broker accepted; DMs, direct
	// messages (each once, not once per copy).
	Published, DMs uint64
	// Joins counts rooms joined by a connection (a resume of a room the
	// connection holds is not a join).
	Joins uint64
	// Deliveries counts message and DM frames handed to local
	// connections.
	Deliveries uint64
	// Rejected counts frames answered with an error frame, by code (the
	// Code constants; anything else is "other"). RateLimited is
	// Rejected[CodeRateLimited].
	Rejected    map[string]uint64
	RateLimited uint64
	// Closes counts connections ended, by WebSocket close code;
	// SlowConsumers is Closes[CloseSlowConsumer].
	Closes        map[int]uint64
	SlowConsumers uint64
	// BrokerErrors counts failed broker calls made for a client's frame,
	// by operation: "publish", "subscribe", "history".
	BrokerErrors map[string]uint64
}

// OtherCode is the Stats.Rejected key of codes the hub does not list.
const OtherCode = "other"

// OtherClose is the Stats.Closes key of close codes the hub does not list.
const OtherClose = 0

// The labels counted, in a fixed order: the counters are arrays indexed
// by position, found by a short scan that allocates nothing.
var (
	statCodes = [...]string{CodeBadFrame, CodeUnknownType, CodeBadRoom, CodeBadName, CodeBadText, CodeBadRef,
		CodeNotJoined, CodeTooManyRooms, CodeRateLimited, CodeUnavailable, CodeTooLarge, CodeInternal, OtherCode}
	statCloses    = [...]int{CloseNormal, CloseTooBig, CloseInternal, CloseServiceRestart, CloseLoggedOut, CloseSlowConsumer, OtherClose}
	statBrokerOps = [...]string{"publish", "subscribe", "history"}
)

// counters is where the hub counts; Stats reads them.
type counters struct {
	published, dms, joins, deliveries atomic.Uint64

	rejected   [len(statCodes)]atomic.Uint64
	closes     [len(statCloses)]atomic.Uint64
	brokerErrs [len(statBrokerOps)]atomic.Uint64
}

func (k *counters) reject(code string) {
	i := slices.Index(statCodes[:], code)
	if i < 0 {
		i = len(statCodes) - 1
	}
	k.rejected[i].Add(1)
}

func (k *counters) closed(code int) {
	i := slices.Index(statCloses[:], code)
	if i < 0 {
		i = len(statCloses) - 1
	}
	k.closes[i].Add(1)
}

func (k *counters) brokerError(op string) {
	if i := slices.Index(statBrokerOps[:], op); i >= 0 {
		k.brokerErrs[i].Add(1)
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	k := &h.stats
	s := Stats{
		Published:    k.published.Load(),
		DMs:          k.dms.Load(),
		Joins:        k.joins.Load(),
		Deliveries:   k.deliveries.Load(),
		Rejected:     make(map[string]uint64, len(statCodes)),
		Closes:       make(map[int]uint64, len(statCloses)),
		BrokerErrors: make(map[string]uint64, len(statBrokerOps)),
	}
	for i, c := range statCodes {
		s.Rejected[c] = k.rejected[i].Load()
	}
	for i, c := range statCloses {
		s.Closes[c] = k.closes[i].Load()
	}
	for i, op := range statBrokerOps {
		s.BrokerErrors[op] = k.brokerErrs[i].Load()
	}
	s.RateLimited = s.Rejected[CodeRateLimited]
	s.SlowConsumers = s.Closes[CloseSlowConsumer]
	return s
}

// QueuedBytes is what the connections' outbound queues hold, in bytes,
// summed. It takes each connection's lock in turn: it is for metrics, not
// for a hot path.
func (h *Hub) QueuedBytes() int {
	h.clientsMu.Lock()
	clients := make([]*Client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.clientsMu.Unlock()
	n := 0
	for _, c := range clients {
		n += c.Queued()
	}
	return n
}
