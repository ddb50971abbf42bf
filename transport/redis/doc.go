// Package redis is a transport.Broker backed by Redis: Lua scripts give
// each stored publication its offset and history entry, Redis pub/sub
// carries publications to the nodes, and a hash per channel holds presence.
// docs/redis.md describes the key layout, the scripts and outage behaviour.
//
// # What it owns
//
// A Broker owns one go-redis client (a connection pool for commands and
// scripts) and one PubSub connection shared by every channel the node is
// subscribed to. It owns the keys under its KeyPrefix for the channels it
// publishes to, and this node's entries in the presence hashes.
//
// # Concurrency
//
// All methods are safe for concurrent use. One receive goroutine reads the
// PubSub connection and is the only caller of the Handler, so for each
// channel deliveries are serial and in offset order. It tracks the last
// offset delivered per channel and fills any gap (after a reconnect, or
// when an offset jumps) from history before delivering further; the Handler
// sees every stored publication once, in order, while the history holds it.
// The handler must not block and must not call Subscribe (Subscribe waits
// for a confirmation that the receive goroutine delivers).
//
// Lock order, where locks nest: Broker.subMu (serialises Subscribe and
// Unsubscribe, held across their Redis round trip), then Broker.mu (short
// sections guarding the subscription table, never held across I/O).
//
// # Redis down
//
// Nothing panics. Publish, History and the presence methods return errors
// wrapping transport.ErrUnavailable; Ping fails; the receive goroutine
// retries with backoff, go-redis resubscribes on reconnect, and missed
// publications are filled from history.
package redis
