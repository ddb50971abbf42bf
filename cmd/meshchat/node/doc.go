// Package node wires meshchat's parts into one running node: gossip
// membership (cluster), a broker (transport/mesh or transport/redis), the
// chat hub (chat), the session store (store) and the HTTP server (web).
//
// New(Config) validates a Config whose zero values mean defaults (each
// default belongs to the package that uses the value; DefaultConfig lists
// them all) and derives the per-purpose keys from the cluster secret.
// Start binds the listeners and runs the wiring as named steps in
// dependency order (start.go); Ready is /readyz; Stop leaves gracefully
// and Kill stops the way a crash looks to peers. Several nodes can run in
// one process: the command's serve and demo, and every test that needs a
// whole node (through nodetest), use this package.
//
// Policy lives here, not in the command: key derivation (keys.go), the
// node's name and advertised URL (addr.go), readiness and how membership
// reaches the broker and hub (membership.go), and the stop order
// (stop.go). The command only turns flags and environment into a Config.
//
// Concurrency: Start is called once; Stop and Kill may be called from any
// goroutine, more than once, and the first call wins. Membership events
// arrive on the cluster's event goroutine (onClusterEvent).
package node
