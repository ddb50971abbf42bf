// Package bench is meshchat's load generator: `meshchat bench` measures a
// cluster from the outside, speaking only the public contract (POST
// /api/login, GET /api/cluster, GET /readyz and the /ws frames), so the same
// run can target a mesh cluster, a Redis-backed cluster or any deployment
// reachable by URL.
//
// It owns: flag and scenario parsing (config.go), the simulated users
// (client.go), one measured run (run.go), starting a throwaway cluster of
// real processes and sampling their CPU and memory from /proc (spawn.go,
// proc.go), and the reports: text tables, JSON, SVG and HTML (report.go).
//
// Measurement model. Every publisher sends `send` frames whose text carries
// its publisher number, a sequence number and the send time in Unix
// nanoseconds; receivers compute latency against the same machine clock.
// A message counts as sent for loss accounting only once its sender saw the
// echo carrying its `ref` (the ack): lost = for every acked message, the
// room members that never received it; duplicated = a member received the
// same message twice. A connection the server closes (for example a slow
// consumer) is counted, reconnects and resumes with `after`, so loss is
// still judged end to end. Slow clients (Scenario.SlowClients) pause after
// every frame during the load, with a small receive buffer and segment
// size, so that the server's slow-consumer shedding is exercised; what an
// unrecovered resume (recovered=false) could not bring back is counted as
// unrecovered, apart from lost.
//
// Concurrency: each connection has exactly one reader goroutine, which is
// the only writer of that connection's delivery bookkeeping (bitsets); the
// runner reads that bookkeeping only after every reader has returned. Live
// counters the runner polls while readers run are atomics. Publishers are
// woken by one shared ticker; each publisher owns a goroutine that writes
// its frames from a preallocated buffer. Writes to one connection are
// serialised by the client's write mutex (gorilla/websocket allows one
// concurrent writer).
package bench
