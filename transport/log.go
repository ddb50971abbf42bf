package transport

import "context"

// Log is durable storage for the channel streams a broker orders or keeps
// a replica of, so that history, epoch and offsets survive a restart of
// every node. A broker given a Log writes to it before it acknowledges,
// keeps its in-memory history as the read path, and reads the Log back only
// when it starts.
//
// A Log applies its own retention (count, age, idempotency window) when it
// writes and when it loads; configure it with the broker's values.
//
// Implementations are safe for concurrent use. Writes to one channel come
// in batches: the appends of a batch may be issued concurrently (so that
// they can share a commit) and may be applied in any order among
// themselves; each batch completes before the next is issued. When a call
// fails, or its ctx
// ends before it returns, the write may or may not have been made durable;
// the broker then treats it as not done and does not acknowledge it.
type Log interface {
	// Append durably adds pub at the end of channel's stream, with the
	// idempotency key it was published with ("" for none). pub.Epoch must
	// be the stream's stored epoch (Reset starts an epoch).
	Append(ctx context.Context, channel string, pub Publication, key string) error
	// Reset durably replaces channel's stream with st: a new epoch, or a
	// copy received from another node.
	Reset(ctx context.Context, channel string, st LogState) error
	// Load returns channel's stored stream, with retention applied. A
	// channel with nothing stored has an empty Epoch.
	Load(ctx context.Context, channel string) (LogState, error)
	// Channels lists the channels with a stored stream.
	Channels(ctx context.Context) ([]string, error)
	// Close flushes and releases the storage. The broker never calls it:
	// whoever opened the Log closes it, after closing the broker.
	Close() error
}

// LogState is a channel's stream as a Log stores it.
type LogState struct {
	Epoch    string
	Offset   uint64 // the last offset assigned in Epoch
	LastTime int64  // Unix ms of the stream's last write; orders epochs
	// Pubs is the retained history, oldest first, all in Epoch.
	Pubs []Publication
	// Keys are the idempotency keys still remembered, oldest first.
	Keys []LogKey
}

// LogKey is a remembered idempotency key and the publication it produced.
// The key is remembered from Pub.Time.
type LogKey struct {
	Key string
	Pub Publication
}
