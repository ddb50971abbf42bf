// Package store owns the HTTP sessions (sessions.go), either in signed and
// encrypted cookies (no server state; a session is valid on every node
// that shares the keys) or in Redis (the cookie holds only a random id),
// and the cluster's record of logged-out sessions (revoke.go). It imports
// only package transport, never chat, web or cluster. The mesh broker's
// on-disk history log lives with the mesh (transport/mesh, bolt.go).
//
// Both session constructors return a gorilla sessions.Store. Gorilla's
// options are per store, and a store does not know whether the request it
// answers came over TLS, so the Secure flag is set by package web on each
// session before saving it (r.TLS != nil or X-Forwarded-Proto: https); the store
// default is what SessionOptions.Secure says. Every cookie is HttpOnly and
// SameSite=Lax.
//
// # Revocations
//
// A cookie session cannot be forgotten by its store, so a logout is
// recorded cluster-wide: Revocations publishes it on the broker channel
// s:revoked (RevokedChannel), every node applies it, and a node started
// later loads what the channel retains. The channel keeps only its latest
// publications, so it is compacted: after every SnapshotEvery logouts
// (by the node whose logout was the K-th in the channel's order) and at
// least every SnapshotInterval, a node publishes a snapshot of every
// unexpired revocation; a logout that finds the latest snapshot more
// than 2*SnapshotEvery publications back takes one itself.
//
// The table is bounded per user (revoketable.go): a user over
// MaxPerUser revocations has all but the newest folded into one record
// that revokes the user's sessions issued until the latest of them, and
// a full table folds the user with the most records before it forgets
// anything, so one user's logouts never push out another's. Records sit
// in a heap by expiry and users in a heap by record count: insertion,
// pruning and eviction are O(log n) under the lock every session check
// takes.
//
// The record does not own the broker: the chat hub is the broker's
// handler and hands it the publications on "s:" channels
// (HandlePublication). The node wires the two: chat.Config.Revocations
// is the record, and Start is given chat.Hub.DisconnectSession, called
// for each session the node learns is revoked. Package web asks it
// whether a session is revoked (SessionRevoked, once Loaded) and records
// logouts (Revoke).
//
// # Concurrency
//
// The session stores are safe for concurrent use, as gorilla's are.
// Every exported method of Revocations is safe for concurrent use; its
// two goroutines (load, then the snapshot and prune loop) start in Start
// and Shutdown waits for them. Lock order: Revocations.snapMu is held
// across the broker calls of one snapshot and taken before
// Revocations.mu, a leaf held for map operations only, never across I/O
// or the disconnect function.
package store
