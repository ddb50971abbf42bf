package transport

import (
	"context"
	"time"
)

// Publication is one payload on a channel. Stored publications carry the
// Offset and Epoch the broker assigned; ephemeral ones (typing, presence
// notices) have Offset 0.
type Publication struct {
	// Offset is the publication's place in the channel's order, from 1.
	Offset uint64
	// Epoch names the incarnation of the channel's stream. Offsets are
	// comparable only within one epoch: a stream that was lost and created
	// again gets a new epoch, so a client resuming from an old epoch learns
	// that it cannot be recovered.
	Epoch string
	// Time is when the publication was ordered, in Unix milliseconds.
	Time int64
	// Data is the payload, opaque to the broker.
	Data []byte
}

// StreamPosition is a point in a channel's order.
type StreamPosition struct {
	Offset uint64
	Epoch  string
}

// PublishOptions are per-call settings for Publish.
type PublishOptions struct {
	// Ephemeral publications are delivered to current subscribers only:
	// they get no offset and are not kept in history.
	Ephemeral bool
	// IdempotencyKey, when set, makes a repeated Publish with the same key
	// on the same channel (within the broker's dedupe window, at least one
	// minute) return the first publication instead of storing a second.
	IdempotencyKey string
}

// HistoryRequest selects part of a channel's retained history.
type HistoryRequest struct {
	// Since, when non-nil, asks for the publications strictly after it.
	Since *StreamPosition
	// Limit caps how many publications are returned; 0 means all retained.
	// With Since nil, the latest Limit publications are returned.
	Limit int
}

// HistoryResult is the answer to History.
type HistoryResult struct {
	Publications []Publication // in offset order
	// Latest is the channel's current position (the last offset assigned).
	Latest StreamPosition
	// Recovered reports that Since was non-nil, in the current epoch, and
	// still within retained history, so Publications continue it with no
	// gap. When false, Publications are the latest retained (up to Limit).
	Recovered bool
}

// Broker moves publications between the nodes of a cluster.
type Broker interface {
	// Start registers the handler that receives inbound publications and
	// starts the broker. It is called once, before any other method.
	Start(ctx context.Context, h Handler) error
	// Publish orders data on channel, stores it in the channel's history
	// (unless ephemeral) and delivers it to every node subscribed to the
	// channel, this one included. It returns once the publication is
	// ordered and stored (the ack); the returned Publication carries the
	// assigned Offset, Epoch and Time. An error means it was not accepted.
	// The broker keeps its own copy of data; the returned Publication's
	// Data may be shared with its history and deliveries, so callers do
	// not modify it.
	Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (Publication, error)
	// Subscribe makes this node receive the channel's publications.
	// Subscriptions are per node, not per connection: the hub subscribes
	// when a channel gets its first local member and unsubscribes after the
	// last one leaves. Subscribe is idempotent.
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe undoes Subscribe. It is idempotent.
	Unsubscribe(ctx context.Context, channel string) error
	// History returns part of the channel's retained history.
	History(ctx context.Context, channel string, req HistoryRequest) (HistoryResult, error)
	// Close stops the broker and waits for its goroutines. Safe to call
	// twice.
	Close(ctx context.Context) error
}

// Handler receives what a Broker delivers. It is implemented by the hub.
type Handler interface {
	// HandlePublication is called for every publication on a channel this
	// node is subscribed to, in offset order per channel. It must not
	// block.
	HandlePublication(channel string, pub Publication)
}

// PresenceManager tracks which users are present in a channel on which
// node, cluster-wide. Brokers implement it; the hub calls it when a user's
// first connection on this node joins a channel and after the last leaves.
type PresenceManager interface {
	// AddPresence records user as present in channel on this node.
	AddPresence(ctx context.Context, channel, user string) error
	// RemovePresence removes user's presence in channel on this node.
	RemovePresence(ctx context.Context, channel, user string) error
	// Presence returns the users present in channel on any alive node,
	// each with the names of the nodes they are on.
	Presence(ctx context.Context, channel string) (map[string][]string, error)
}

// Pinger is implemented by brokers that depend on something outside the
// process; readiness checks use it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Peer is one node of the cluster as the brokers see it.
type Peer struct {
	Name string // unique node name
	Addr string // HTTP base URL, e.g. http://127.0.0.1:8081
}

// DefaultHistorySize is how many publications a channel retains unless
// configured otherwise.
const DefaultHistorySize = 1000

// DefaultDedupeWindow is how long an IdempotencyKey is remembered.
const DefaultDedupeWindow = 2 * time.Minute

// Observer takes one measurement, such as a duration in seconds. A
// prometheus.Histogram is one; the packages that measure declare no
// dependency on Prometheus. Observe is called on hot paths: it must not
// block.
type Observer interface {
	Observe(v float64)
}
