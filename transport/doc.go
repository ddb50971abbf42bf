// Package transport defines how chat traffic travels between the nodes of a
// meshchat cluster: the Broker interface, the Publication it carries and the
// Handler through which inbound traffic comes back to the hub.
//
// A broker knows nothing of chat. It moves opaque payloads on named
// channels, gives each stored publication its place in the channel's single
// order, keeps the channel's retained history, and tracks which users are
// present on which node. The chat package encodes and decodes payloads.
//
// Implementations live in sub-packages: inproc (one process), mesh
// (peer-to-peer between nodes) and redis (Redis pub/sub). Every one of them
// passes the conformance suite in brokertest.
//
// Concurrency: every Broker method is safe for concurrent use. A Broker
// calls its Handler from its own goroutines; for any one channel it calls
// HandlePublication from one goroutine at a time, in offset order, and the
// Handler must not block (hand work off, never wait on the network).
package transport
