package chat

import (
	"context"
	"errors"

	"github.com/meshchat/meshchat/transport"
)

// RoomAccess is the cluster's record of private rooms (store.Rooms), as
// the hub uses it. A room it does not know is public.
type RoomAccess interface {
	// Access reports whether room is private and, if so, whether user
	// is one of its members.
	Access(room, user string) (private, member bool)
	// Owner returns the private room's owner.
	Owner(room string) (string, bool)
	// Create makes room private, with owner as its first member; it
	// fails when the room is private already.
	Create(ctx context.Context, room, owner string) error
	// Invite and Remove change the members of a private room. Remove
	// leads to Hub.RemovedFromRoom on every node.
	Invite(ctx context.Context, room, user string) error
	Remove(ctx context.Context, room, user string) error
}

// Coded is implemented by the errors of a RoomAccess that clients may
// see: Code is the error frame's code.
type Coded interface {
	Code() string
}

// isAdmin reports whether user holds the admin role.
func (h *Hub) isAdmin(user string) bool { return h.admin != nil && h.admin(user) }

// checkAccess refuses a user who may not be in room: a private room of
// which they are not a member (admins may be anywhere).
func (h *Hub) checkAccess(room, user string) *frameError {
	if h.rooms == nil {
		return nil
	}
	if private, member := h.rooms.Access(room, user); private && !member && !h.isAdmin(user) {
		return errf(CodeForbidden, "this room is private: its owner can invite you")
	}
	return nil
}

// createPrivate makes room private for c's user, when it is new: a room
// that already has messages stays what it is.
func (h *Hub) createPrivate(ctx context.Context, c *Client, room string) *frameError {
	if h.rooms == nil {
		return errf(CodeForbidden, "private rooms are off on this node")
	}
	if private, _ := h.rooms.Access(room, c.user); private {
		return nil // join's access check decides
	}
	var res transport.HistoryResult
	err := h.patiently(ctx, c, unavailableWait, func(ctx context.Context) (err error) {
		res, err = h.broker.History(ctx, roomPrefix+room, transport.HistoryRequest{Limit: 1})
		return err
	})
	if err != nil {
		return h.brokerErr("history", err)
	}
	if res.Latest.Offset > 0 {
		return errf(CodeRoomExists, "a public room of this name exists; pick another name")
	}
	if err := h.rooms.Create(ctx, room, c.user); err != nil {
		return accessErr(err)
	}
	return nil
}

// accessErr turns an error of the room record into an error frame.
func accessErr(err error) *frameError {
	var coded Coded
	if errors.As(err, &coded) {
		return errf(coded.Code(), err.Error())
	}
	return errf(CodeUnavailable, "cannot change the room right now, retry")
}

// member handles invite and remove frames: the room's owner and admins
// may invite and remove anyone; a member may remove themself.
func (h *Hub) member(ctx context.Context, c *Client, invite bool, room, user, ref string) *frameError {
	if h.rooms == nil {
		return errf(CodeForbidden, "private rooms are off on this node")
	}
	owner, ok := h.rooms.Owner(room)
	if !ok {
		return errf(CodeNotFound, "no private room of this name")
	}
	self := !invite && user == c.user
	if owner != c.user && !h.isAdmin(c.user) && !self {
		return errf(CodeForbidden, "only the room's owner or an admin can do that")
	}
	var err error
	if invite {
		err = h.rooms.Invite(ctx, room, user)
	} else {
		err = h.rooms.Remove(ctx, room, user)
	}
	if err != nil {
		return accessErr(err)
	}
	if invite {
		// The invitee learns of it on every connection, wherever they
		// are: a notice on their inbox, which each of them follows.
		ev := event{Kind: kindInvited, User: c.user, To: user, Text: room}
		if _, err := h.broker.Publish(ctx, inboxPrefix+user, ev.marshal(), transport.PublishOptions{Ephemeral: true}); err != nil {
			h.log.Debug("publishing invitation notice", "err", err)
		}
	}
	f := memberFrame(invite, room, user)
	if ref != "" {
		f = withRef(f, ref)
	}
	c.enqueue(f)
	return nil
}

// RemovedFromRoom is called (by the room record, on every node) when user
// was removed from the private room: their connections that are in it
// here are closed with CloseRemoved. They reconnect, and the room now
// refuses them; their other rooms resume where they were.
func (h *Hub) RemovedFromRoom(room, user string) {
	r := h.lookup(roomPrefix + room)
	if r == nil {
		return
	}
	r.mu.Lock()
	var hit []*Client
	for c := range r.members {
		if c.user == user {
			hit = append(hit, c)
		}
	}
	r.mu.Unlock()
	for _, c := range hit {
		c.disconnect(CloseRemoved, "removed_from_room")
	}
}

// memberFrame answers an invite or remove frame: {"type":"invited" or
// "removed","room","user"}.
func memberFrame(invite bool, room, user string) []byte {
	typ := `{"type":"removed","room":`
	if invite {
		typ = `{"type":"invited","room":`
	}
	b := append([]byte(typ), nil...)
	b = appendString(b, room)
	b = appendField(b, "user", user)
	return append(b, '}')
}

// invitationFrame tells a user they were invited:
// {"type":"invitation","room","by"}.
func invitationFrame(room, by string) []byte {
	b := []byte(`{"type":"invitation","room":`)
	b = appendString(b, room)
	b = appendField(b, "by", by)
	return append(b, '}')
}

// joinFrame handles a join frame: a private room admits its members (and
// admins) only, and "private" creates one.
func (h *Hub) joinFrame(ctx context.Context, c *Client, room, after string, private bool) *frameError {
	if private {
		if fe := h.createPrivate(ctx, c, room); fe != nil {
			return fe
		}
	}
	if fe := h.checkAccess(room, c.user); fe != nil {
		return fe
	}
	return h.join(ctx, c, room, after)
}

// privateOwner returns the owner of room when it is private, else "".
func (h *Hub) privateOwner(room string) string {
	if h.rooms == nil {
		return ""
	}
	owner, _ := h.rooms.Owner(room)
	return owner
}
