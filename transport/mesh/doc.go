// Package mesh is the embedded peer-to-peer transport.Broker: the nodes of
// a cluster carry chat traffic between themselves over their HTTP
// listeners, with no external service.
//
// # What it owns
//
// Every channel has an owner, the first node in the rendezvous (HRW)
// ranking of the channel name over the alive peers, and a backup, the
// second, in this node's view (docs/cluster.md, "When views disagree":
// nodes whose views differ settle on one owner through refused takeovers,
// "not owner, try X" redirects and notices to re-register). The owner
// orders the channel's publications (offset, epoch, time), keeps its
// retained history and idempotency keys, the set of subscribed nodes and
// the presence table, and sends each publication to every subscribed node
// in offset order. A stored publication gets its offset at once but is
// made readable, fanned out and acknowledged only once it and every
// earlier one have been copied to the backup (or, while the backup does
// not answer, to a standby, the node ranked next), which keeps a replica
// (copies travel in batches, one batch per channel in flight); when the
// owner fails, the backup ranks first and continues the same epoch at the
// next offset. Each node owns its local side of every channel it uses:
// whether it is subscribed, the last offset handed to the handler,
// publications that arrived ahead of a gap, and its present users.
// A node orders channels only while it sees a strict majority of the
// cluster's voting nodes (Quorum, quorum.go): the minority side of a
// partition refuses with ErrNoQuorum, so a channel never gets two orders.
// docs/cluster.md, "Ordering and ownership", has the full design.
//
// # A publication's path
//
//  1. Publish (client.go) finds the channel's owner in this node's view
//     (peers.go) and sends it the request over the link to that node
//     (link.go), following "not owner, try X" redirects; when this node
//     is the owner, it calls the owner's code directly.
//  2. On the owner, the request arrives on a connection the publisher
//     dialled (inbound.go) and serveRequest hands it to its op's handler
//     (owner.go). The owner takes the channel's state (state.go), first
//     taking the channel over if it just became its owner (takeover.go).
//  3. Ordered: ownerPublish assigns the offset under the channel's lock
//     and queues the publication (owner.go).
//  4. Replicated: the channel's flusher writes the queued batch to the Log
//     (log.go) while copying it to the backup (pipeline.go); the backup
//     applies the copies to its replica (replica.go).
//  5. Delivered: once the batch is confirmed, the owner adds it to the
//     history and fans it out (fanout, owner.go) on its links to every
//     subscribed node; each node checks the order and hands it to the hub
//     (local.go); then the publisher gets its answer.
//
// # Files
//
//	broker.go      Config, New, Start, Close, the goroutines Close waits for
//	client.go      the RPC client: requests to a channel's owner (link.call,
//	               redirects) and the transport.Broker methods built on them
//	peers.go       the peer view and ranking, and what a view change does
//	quorum.go      the voting nodes and the quorum a node needs to order
//	handshake.go   both ends of the authenticated WebSocket handshake
//	seal.go        the per-connection keys and the encryption of frames
//	conn.go        a connection's bounded send queue, batching writer, reader
//	link.go        the outbound link to a peer and its dial/redial loop
//	inbound.go     connections peers dial here: deliveries, notices, requests
//	owner.go       the owner's request handlers (one per op), ordering, fanout
//	state.go       a channel's state as its owner or backup keeps it
//	budget.go      the history budget: byte accounting, LRU eviction
//	takeover.go    taking a channel over, and handing it over when asked
//	pipeline.go    the owner's side of replication: batches, confirm, abandon
//	replica.go     the backup's side: applying copies and snapshots
//	local.go       this node's side of a channel: order checks, resync
//	log.go         the Log interface and what the broker writes to it
//	bolt.go        Bolt, the Log in one bbolt file, and its group commit
//	boltstream.go  the streams in a Bolt file: records, retention
//	wire.go        the binary encoding of messages
//	stats.go       counters and sizes for the node's metrics
//	errors.go      sentinel errors
//
// # Durability
//
// With Config.Log set, an owner and a backup write each stored
// publication (and each new or adopted stream) to the log before they
// acknowledge it, and Start reads the log back, so a restart of every node
// keeps each channel's history, epoch and next offset. Memory stays the
// read path, and, under Config.HistoryBudget, a cache of the Log: a
// channel evicted from memory is read back from it when next used
// (budget.go). Bolt is the Log cmd wires in with --data (OpenBolt); the
// broker never closes it. docs/storage.md has the design.
//
// # Wiring
//
// Mount Handler at MountPath ("/_mesh/") on the node's HTTP listener; the
// handler accepts any path ending in "/ws", prefix stripped or not. Call
// PeersChanged on every membership change, with Config.Peers returning the
// alive nodes (this one included).
//
// # Concurrency
//
// Every exported method is safe for concurrent use. Goroutines: one
// membership goroutine; with a HistoryBudget, one eviction goroutine; per outbound link a dialler/reader and a writer;
// per inbound connection the HTTP handler's goroutine as reader, a writer,
// and up to 64 request goroutines; per channel at most one resync
// goroutine and, while it has unconfirmed publications, one flusher. All
// are started through goFn (or goAdd) and Close waits for them. A Bolt
// log runs one writer goroutine, which its Close waits for.
//
// Locks: chanState.lk (a channel's owner or replica state; acquired with
// a deadline; held across a takeover and a backup's log write, never
// across the owner's copy to its backup or its own log write) is taken
// before localChan.mu (a leaf) and before a link's or queue's mutex
// (leaves). Broker.chMu, localMu and linkMu only guard their maps and are
// never held while taking another lock, except linkMu, which is held
// while closing links. The handler is never called with a lock held: a
// channel's queued publications are drained by one goroutine at a time,
// so HandlePublication runs once at a time per channel, in order.
package mesh
