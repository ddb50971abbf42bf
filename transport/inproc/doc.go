// Package inproc is a transport.Broker that lives entirely in one process.
//
// A single Broker is a cluster of one: the broker a node uses when it runs
// alone, and the reference implementation the conformance suite
// (transport/brokertest) is checked against. Several Brokers can share a
// *Network, an in-memory stand-in for a cluster: they then share channel
// order, history, idempotency keys and presence, and deliver to each other
// exactly as brokers on different nodes would.
//
// # What it owns
//
// A Network owns every channel's state: epoch, last offset, retained
// history, recent idempotency keys, the set of subscribed brokers, and the
// presence table. A Broker owns its node name, its handler and its own set
// of subscriptions.
//
// # Concurrency
//
// All methods are safe for concurrent use. Publish orders and stores under
// the channel's mutex, then delivers outside any lock: the first publisher
// that finds no delivery running on the channel becomes its deliverer and
// drains the channel's queue, later publishers only enqueue. So for each
// channel exactly one goroutine calls handlers at a time, in offset order,
// and Publish never waits for another channel. A handler may call back into
// the broker (History, Publish) without deadlock, but must not call Close.
//
// Lock order, where locks nest: Network.mu, then Broker.mu, then
// channel.mu. No lock is held while a handler runs.
package inproc
