// Package web is meshchat's HTTP face: the JSON API (login, logout, me,
// cluster), the WebSocket endpoint that connects browsers to the chat hub,
// health and readiness probes, node-to-node mounts such as /_mesh/, and
// the embedded UI at "/".
//
// Authentication is a gorilla session cookie named "meshchat" (HttpOnly,
// SameSite=Lax, Secure when the request came over TLS or through a proxy
// that says X-Forwarded-Proto: https). Login also returns a short signed
// bearer token so a client can fail over to another node on another host,
// where the cookie is not sent; /ws takes it as ?token= and the API as
// Authorization: Bearer. Logout revokes the session id cluster-wide through
// the hub, which makes both the cookie and its tokens useless everywhere;
// with a server-side session store (Redis) a token is also honoured only
// while its session is stored. Until the hub has loaded the cluster's
// revocations (chat.Hub.RevocationsLoaded) a session cannot be checked, and
// requests that need one get 503 unavailable.
//
// # Concurrency
//
// Each WebSocket connection owns two goroutines, started once the upgrade
// succeeded (the HTTP handler returns, so net/http releases its
// per-request buffers): the reader, which feeds frames to its
// chat.Client, and the writer, which drains the client's queue in batches
// and sends pings. The writer corks the socket (corkConn) around a batch
// so that the batch leaves in one system call; buffers for reading a
// frame and for a batch are pooled, so an idle connection holds neither. When the reader ends the writer is
// stopped and waited for; when the hub disconnects a client the writer
// sends the close frame and the reader gets a short grace period to see
// the peer's answer. Shutdown waits for every connection's goroutines.
package web
