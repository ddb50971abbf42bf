// Package web is meshchat's HTTP face: the JSON API (login, logout, me,
// cluster), the WebSocket endpoint that connects browsers to the chat hub,
// the server API for other programs (/api/server/, with the operator's
// key: api.go), the WebSocket's fallback for networks that block
// WebSockets (an events stream, sse.go, and one-shot POSTs on any node,
// post.go), health and readiness probes, node-to-node mounts such as
// /_mesh/, and the embedded UI at "/".
//
// The server depends on the chat hub and on two small interfaces it
// declares itself: Revocations (the cluster's record of logouts, which
// package store keeps) and Membership (the cluster's nodes, which the
// node adapts from package cluster; web does not import cluster).
//
// Authentication is a gorilla session cookie named "meshchat" (HttpOnly,
// SameSite=Lax, Secure when the request came over TLS or through a proxy
// that says X-Forwarded-Proto: https). Login also returns a short signed
// bearer token so a client can fail over to another node on another host,
// where the cookie is not sent; /ws takes it as ?token= and the API as
// Authorization: Bearer. Logout revokes the session id cluster-wide
// (Revocations.Revoke), which makes both the cookie and its tokens useless
// everywhere and closes the session's WebSocket connections; with a
// server-side session store (Redis; one that can confirm a session by id)
// a token is also honoured only while its session is stored, and a logout
// that cannot be recorded still ends the session. Until the node has
// loaded the cluster's revocations (Revocations.Loaded) a session cannot
// be checked, and requests that need one get 503 unavailable. Login also sets
// "meshchat_in", a page-readable hint with the session cookie's scope and
// lifetime (cleared with it on logout), so the UI knows whether to ask
// /api/me at all.
//
// # Concurrency
//
// An idle WebSocket connection costs one goroutine with a small stack
// and a few KiB of heap (see wsConn in ws.go for the details):
//
//   - The reader waits for bytes on a fresh goroutine, a few frames deep,
//     and hands waiting over to a new one after each burst of frames, so
//     the stack of an idle connection never grew. Pongs are consumed
//     while waiting; everything else goes through gorilla and then to the
//     connection's chat.Client.
//   - A writer runs only while there is something to write: the client's
//     notify function (chat.Client.SetNotify) starts it when frames are
//     queued or the hub disconnects the client, and the ping timer
//     (time.AfterFunc) when a ping is due. At most one writer runs per
//     connection; it drains the queue in batches and stops once it finds
//     it empty. Writers run on the server's pool of goroutines (writers
//     in writers.go), which keep their grown stacks between batches and
//     exit after two idle seconds, so an idle node keeps none.
//
// The writer corks the socket (corkConn) around a batch so that the batch
// leaves in one system call; buffers for reading a frame, for a batch and
// gorilla's write buffer are pooled, so an idle connection holds none of
// them. When the reader ends, writing stops, a running writer is waited
// for and the connection is closed; when the hub disconnects a client the
// writer sends the close frame and the reader gets a short grace period
// to see the peer's answer. A frame over the hard cap ends the reader
// after gorilla's close 1009; the reader then drops what the peer still
// sends for a moment, so that the close frame is not lost to a TCP reset.
// Shutdown waits for every connection to end, then for the writer pool.
//
// An events stream (sse.go) is a chat.Client too, with the same bounded
// queue: its handler's goroutine writes (woken by the notify function,
// and every PingInterval for a keepalive event), and a second goroutine
// makes the stream's joins and inbox request, which may wait on the
// cluster, and retries those the cluster could not serve. The stream ends
// when the peer goes, a write fails, or the hub disconnects the client (a
// close event carries the code); Shutdown waits for it like a WebSocket.
package web
