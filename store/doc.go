// Package store owns the HTTP sessions (sessions.go), either in signed and
// encrypted cookies (no server state; a session is valid on every node
// that shares the keys) or in Redis (the cookie holds only a random id).
// The mesh broker's on-disk history log lives with the mesh
// (transport/mesh, bolt.go).
//
// Both session constructors return a gorilla sessions.Store. Gorilla's
// options are per store, and a store does not know whether the request it
// answers came over TLS, so the Secure flag is set by package web on each
// session before saving it (r.TLS != nil or X-Forwarded-Proto: https); the store
// default is what SessionOptions.Secure says. Every cookie is HttpOnly and
// SameSite=Lax.
//
// Concurrency: the session stores are safe for concurrent use, as
// gorilla's are.
package store
