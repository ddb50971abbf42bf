package chat

import (
	"context"

	"github.com/meshchat/meshchat/transport"
)

// Annotations are stored events on a room's channel that refer to an
// earlier message of the room by its id (event.Target): a deletion
// (kindDelete) today; an edit or a reaction is another kind with a
// target. The broker orders an annotation in the room's one order like
// any message, so every member sees it at the same place, and it
// survives an owner's failover and a client's resume as messages do.
//
// A client never gets an annotation as a message. Live, it gets the
// annotation's own frame ("deleted"). In history, annotations apply to
// the messages before them and are left out themselves (historyFrames):
// a deleted message is not served again once its deletion is in the
// same slice of history, which it always is when the message is, since
// it comes later. A resume also gets, after "joined", the frames of the
// annotations of messages it had before its resume point.
//
// A deletion does not erase the stored bytes: the broker keeps the
// message in its retained history until retention drops it, and only
// never serves its text again.

// isAnnotation reports whether kind is an annotation's.
func isAnnotation(kind string) bool { return kind == kindDelete }

// annotations is what the annotations in a slice of a room's history
// say about the messages of the room.
type annotations struct {
	// gone: the ids of deleted messages, each with whether its deletion
	// has been told already (first).
	gone map[string]bool
}

func readAnnotations(evs []event) annotations {
	var a annotations
	for i := range evs {
		if evs[i].Kind == kindDelete && evs[i].Target != "" {
			if a.gone == nil {
				a.gone = make(map[string]bool)
			}
			a.gone[evs[i].Target] = false
		}
	}
	return a
}

// deleted reports whether the message stored at p is deleted.
func (a annotations) deleted(p transport.Publication) bool {
	if len(a.gone) == 0 {
		return false
	}
	_, ok := a.gone[formatID(p.Offset, p.Epoch)]
	return ok
}

// first reports whether the annotation ev is to be told: a message
// deleted twice (two deletions further apart than the broker's dedupe
// window) is told deleted once.
func (a annotations) first(ev *event) bool {
	if ev.Kind != kindDelete {
		return true
	}
	told, ok := a.gone[ev.Target]
	if !ok || told {
		return false
	}
	a.gone[ev.Target] = true
	return true
}

// within reports whether the message id is one of pubs, a contiguous
// run of a channel's publications.
func within(id string, pubs []transport.Publication) bool {
	off, epoch, ok := parseID(id)
	return ok && len(pubs) > 0 && epoch == pubs[0].Epoch && off >= pubs[0].Offset
}

// Delete deletes the message id from room for the server API, which may
// delete any message: every member gets a "deleted" frame naming by (a
// user name, or empty for the operator), and history leaves the message
// out from then on. Deleting a deleted message again succeeds. Failures
// are *Error: bad_room, bad_name (by), not_found when id is not a
// message in the room's retained history, unavailable.
func (h *Hub) Delete(ctx context.Context, room, id, by string) error {
	if !ValidName(room) {
		return errf(CodeBadRoom, "invalid room name").public()
	}
	if by != "" && !ValidName(by) {
		return errf(CodeBadName, "invalid user name in by").public()
	}
	if _, _, fe := h.deleteMessage(ctx, nil, room, id, by, true, ""); fe != nil {
		return fe.public()
	}
	return nil
}

// delete answers a "delete" frame: the connection's user may delete
// their own messages, and an admin (Config.IsAdmin) any message. The
// connection must hold the room, as for send; its ref comes back on the
// "deleted" frame it gets.
func (h *Hub) delete(ctx context.Context, c *Client, name, id, ref string) *frameError {
	j := c.rooms[name]
	if j == nil {
		return errf(CodeNotJoined, "join the room before deleting in it")
	}
	pub, ev, fe := h.deleteMessage(ctx, c, name, id, c.user, h.isAdmin(c.user), ref)
	if fe != nil {
		return fe
	}
	if ref != "" {
		j.r.ack(j.m, c, pub, ev, ref)
	}
	return nil
}

// deleteMessage publishes the deletion of message id of room by user by,
// for c (nil for the server API, whose ref is then empty). Both ways of
// deleting take this path. Unless admin, by must be the message's author,
// which is read from the one publication the id names in the broker's
// history.
func (h *Hub) deleteMessage(ctx context.Context, c *Client, room, id, by string, admin bool, ref string) (transport.Publication, event, *frameError) {
	notFound := errf(CodeNotFound, "no such message in the room's history")
	off, epoch, ok := parseID(id)
	if !ok || len(id) > maxAfterBytes {
		return transport.Publication{}, event{}, notFound
	}
	channel := roomPrefix + room
	req := transport.HistoryRequest{Since: &transport.StreamPosition{Offset: off - 1, Epoch: epoch}, Limit: 1}
	var res transport.HistoryResult
	err := h.patiently(ctx, c, unavailableWait, func(ctx context.Context) (err error) {
		res, err = h.broker.History(ctx, channel, req)
		return err
	})
	if err != nil {
		return transport.Publication{}, event{}, h.brokerErr("history", err)
	}
	if !res.Recovered || len(res.Publications) != 1 || res.Publications[0].Offset != off {
		return transport.Publication{}, event{}, notFound
	}
	target, ok := decodeEvent(res.Publications[0].Data)
	if !ok || target.Kind != kindMessage {
		return transport.Publication{}, event{}, notFound
	}
	if !admin && target.User != by {
		return transport.Publication{}, event{}, errf(CodeForbidden, "only its author or an admin may delete a message")
	}
	ev := event{Kind: kindDelete, User: by, Target: formatID(off, epoch), Ref: ref}
	// Keyed as a send is, with a recipient no name can be: a frame
	// repeated with its ref stores one deletion.
	var key string
	if c != nil {
		ev.Conn = c.id
		key = c.publishKey(ref, deleteKeyTo, ev.Target)
	} else {
		key = h.apiKey(by, "", deleteKeyTo, ev.Target)
	}
	pub, fe := h.publish(ctx, c, "publish", channel, ev.marshal(), transport.PublishOptions{IdempotencyKey: key})
	return pub, ev, fe
}

// deleteKeyTo stands for the recipient in a deletion's idempotency key,
// so that it never equals a send's.
const deleteKeyTo = "\x00delete"
