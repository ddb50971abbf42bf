package chat

import (
	"context"
)

// One-shot requests: a send, a DM or a typing notice by a user who has
// no connection on this node, such as a client whose events stream
// (Server-Sent Events) is served by another node and who posts each
// message over plain HTTP to whichever node the load balancer picks. They
// take the same path as the frames of a connection (validation, the
// publish with its idempotency key, the broker's retries), so a retry
// with the same ref is acknowledged with the original message wherever
// it lands. Only the connection is missing: the answer is returned
// instead of queued, and the rate limit is per user on this node.

// Ack is a one-shot send or DM that was stored: its id, and the frame a
// connection of the sender would have received as the acknowledgement
// (a "message" or "dm" frame carrying the ref).
type Ack struct {
	ID    string
	Frame []byte
}

// Send stores and delivers text in room as user, like a send frame, but
// without joining the room: nothing here tells whether the user's events
// stream holds it. A retry with the same ref (on any node) returns the
// original message.
func (h *Hub) Send(ctx context.Context, user, room, text, ref string) (Ack, error) {
	c, err := h.oneShot(user, inFrame{Type: typeSend, Room: room, Text: text, Ref: ref})
	if err != nil {
		return Ack{}, err
	}
	if fe := h.checkAccess(room, user); fe != nil {
		return Ack{}, fe.public()
	}
	pub, ev, ferr := h.publishMessage(ctx, c, room, text, ref)
	if ferr != nil {
		return Ack{}, &Error{Code: ferr.code, Message: ferr.msg}
	}
	f, _ := ackFrame(room, pub, ev, ref)
	return Ack{ID: formatID(pub.Offset, pub.Epoch), Frame: f}, nil
}

// DM stores a direct message from user to to in both inboxes, like a dm
// frame. The Ack is the sender's copy, with the DM's one id.
func (h *Hub) DM(ctx context.Context, user, to, text, ref string) (Ack, error) {
	c, err := h.oneShot(user, inFrame{Type: typeDM, To: to, Text: text, Ref: ref})
	if err != nil {
		return Ack{}, err
	}
	pub, ev, ferr := h.publishDM(ctx, c, to, text, ref)
	if ferr != nil {
		return Ack{}, &Error{Code: ferr.code, Message: ferr.msg}
	}
	f, _ := ackFrame("", pub, ev, ref)
	return Ack{ID: dmID(pub, ev), Frame: f}, nil
}

// Typing tells room that user is typing, like a typing frame. It is best
// effort: only validation and the rate limit fail it.
func (h *Hub) Typing(ctx context.Context, user, room string) error {
	c, err := h.oneShot(user, inFrame{Type: typeTyping, Room: room})
	if err != nil {
		return err
	}
	h.publishTyping(ctx, c, room)
	return nil
}

// oneShot validates a request and returns the connection it is made on:
// one of its own, never registered, so that nothing is delivered to it.
func (h *Hub) oneShot(user string, f inFrame) (*Client, error) {
	if !ValidName(user) {
		return nil, &Error{Code: CodeBadName, Message: "invalid user name"}
	}
	if !h.posters.allow(h.now(), user, h.rate, h.burst) {
		return nil, &Error{Code: CodeRateLimited, Message: "too many requests, slow down"}
	}
	if ferr := f.validate(h.maxText); ferr != nil {
		return nil, &Error{Code: ferr.code, Message: ferr.msg}
	}
	if h.ctx.Err() != nil {
		return nil, &Error{Code: CodeUnavailable, Message: "server is shutting down"}
	}
	return &Client{hub: h, id: h.newConnID(), user: user}, nil
}
