// Package chat is meshchat's domain: the Hub that owns rooms, members,
// presence, history and direct messages, and the Client that is one
// WebSocket connection's view of it. It imports only package transport.
//
// Send, DM and Typing (oneshot.go) serve a user who has no connection on
// this node, such as a client whose events stream is on another node:
// they take the frames' path (validation, publish, idempotency) and
// return the acknowledgement instead of queueing it.
//
// The hub speaks to the rest of the cluster only through a
// transport.Broker, whose handler it is. Rooms live on channel
// "r:<room>" and each user's DM inbox on "u:<user>". A DM is stored in
// the recipient's inbox, then in the sender's, carrying the position of
// the first as the id both copies show (event.ID). A room's channel also
// stores annotations, events that refer to one of its messages (a
// deletion; see annotate.go), which history applies to the messages
// rather than serving them. Payloads on the
// broker are compact JSON events (see event.go); the hub decodes each
// delivered publication once per node and encodes the outbound frame once
// for all local members, plus one variant carrying "ref" for the
// connection that sent it.
//
// Session revocation (logout) is not the hub's: package store keeps the
// record, on channel "s:revoked". The hub hands the broker's deliveries
// on "s:" channels to it (Config.Revocations, a small interface declared
// here), asks it whether a connection's session is revoked when the
// connection opens, and offers one entry point for it to call:
// DisconnectSession, which closes a session's connections with
// CloseLoggedOut.
//
// # Concurrency
//
// Channels are spread over shards by hash; a shard's mutex guards only its
// channel map, and each channel (type room) has its own locks, so there is
// no hub-wide mutex on the message path. HandlePublication never blocks:
// it appends the encoded frame to each member's bounded outbound queue,
// and a member whose queue would exceed Config.QueueBytes is disconnected
// as a slow consumer (close code 4008) instead of slowing the fan-out.
//
// The hub counts what it does (Stats) in atomic counters that the
// node's metrics read when scraped; the fan-out adds its deliveries once
// per publication, after the loop, so counting takes no lock and
// allocates nothing per member.
//
// Lock order, where locks nest:
//
//	Client.op -> room.ctl -> room.mu -> Client.mu
//	shard.mu is a leaf: nothing else is taken while it is held.
//	slowLog.mu (the latest slow consumers) is a leaf, taken under
//	Client.mu when a slow consumer is cut.
//	A client's notify function (Client.SetNotify) runs under room.mu
//	and Client.op, after Client.mu: it may take only leaf locks.
//	Config.Revocations is called with no hub lock held.
//
// room.ctl serialises the slow control path of one channel (subscribe,
// unsubscribe, presence writes) and may be held across broker calls;
// room.mu is the hot-path lock and is never held across I/O. Client.op
// serialises the frames of one connection (Handle) with its Close.
package chat
