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
// An idle WebSocket connection costs one goroutine with a small stack
// and a few KiB of heap (see wsConn in ws.go for the details):
//
//   - The reader waits for bytes on a fresh goroutine, a few frames deep,
//     and hands waiting over to a new one after each burst of frames, so
//     the stack of an idle connection never grew. Pongs are consumed
//     while waiting; everything else goes through gorilla and then to the
//     connection's chat.Client.
//   - A writer goroutine runs only while there is something to write: the
//     client's notify function (chat.Client.SetNotify) starts it when
//     frames are queued or the hub disconnects the client, and the ping
//     timer (time.AfterFunc) when a ping is due. At most one writer runs;
//     it drains the queue in batches and exits once it finds it empty.
//
// The writer corks the socket (corkConn) around a batch so that the batch
// leaves in one system call; buffers for reading a frame, for a batch and
// gorilla's write buffer are pooled, so an idle connection holds none of
// them. When the reader ends, writing stops, a running writer is waited
// for and the connection is closed; when the hub disconnects a client the
// writer sends the close frame and the reader gets a short grace period
// to see the peer's answer. Shutdown waits for every connection to end.
package web
