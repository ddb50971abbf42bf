// Package cluster owns gossip membership for a meshchat node: it runs
// hashicorp/memberlist, joins the configured seeds (retrying in the
// background), re-joins known peers so that a healed partition merges, and
// tells subscribers which nodes are alive, dead or gone. With
// Config.PeersFile it keeps the other nodes' gossip addresses on disk
// (peers.go, written by the coalescing goroutine) and joins them at the
// next start, along with the seeds.
//
// Each node advertises a small, versioned metadata record (NodeMeta) with
// its name, its HTTP base URL and an opaque field for the broker.
//
// The package is a leaf: it imports nothing else of meshchat. Members,
// Alive and the events hand out its own Node type; the node translates
// them for the brokers (transport.Peer) and for package web (web.Member).
//
// Concurrency: every exported method is safe for concurrent use.
// memberlist calls the delegates in this package with its own locks held,
// so they only update the member table under c.mu (held for a few map
// operations, never across I/O) and poke a one-slot signal channel; they
// never block. One goroutine (coalesce) notices the signal, waits for the
// burst to settle, diffs the member table against what it last reported
// and calls the subscribers with the differences. Subscribers therefore run
// on that goroutine, one at a time and in order, and must not block for
// long. Other goroutines: the seed joiner and the re-join ticker. All are
// started through Cluster.goFn and waited for by Shutdown.
//
// Lock order: c.mu is a leaf; it is never held while calling memberlist or a
// subscriber. c.subMu guards the subscriber list only.
package cluster
