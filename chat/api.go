package chat

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/meshchat/meshchat/transport"
)

// The server API's entry points: other programs (through package web's
// /api/server/ endpoints, which hold the operator's API key) post as a
// named user, read history and presence, list rooms and disconnect users.
// Posts take the path a connection's send and dm frames take (postMessage,
// postDM), with the same validation, idempotency keys and broker retries;
// without a connection, nothing is echoed with a ref, and failures come
// back as *Error.

// MaxHistoryLimit bounds History's limit.
const MaxHistoryLimit = 1000

// RoomInfo is a room as Rooms lists it.
type RoomInfo struct {
	Name string
	// Members is how many users are online in the room cluster-wide, as
	// this node's presence for the room counts them.
	Members int
	// Local is how many of them are connected to this node.
	Local int
	// Online are those users, sorted.
	Online []string
	// Owner is the user who owns the room when it is private, else "".
	Owner string
}

// RoomChannel is the broker channel that carries room's messages.
func RoomChannel(room string) string { return roomPrefix + room }

// PublishAs posts text to room as user from, like a send frame of one of
// from's connections, and returns the message's id. A ref makes it
// idempotent as a send's ref does (a repeat returns the original id); it
// is not stored or echoed. from need not be connected anywhere.
func (h *Hub) PublishAs(ctx context.Context, from, room, text, ref string) (string, error) {
	var bad *frameError
	if !ValidName(room) {
		bad = errf(CodeBadRoom, "invalid room name")
	}
	return h.postAs(from, ref, text, bad, func() (string, *frameError) {
		ev := event{Kind: kindMessage, User: from, Text: text}
		pub, fe := h.postMessage(ctx, nil, roomPrefix+room, ev, h.apiKey(from, ref, "", text))
		return formatID(pub.Offset, pub.Epoch), fe
	})
}

// DMAs sends a direct message from user from to user to, like a dm frame
// of one of from's connections, and returns the DM's id (one id on
// every copy). ref works as in PublishAs.
func (h *Hub) DMAs(ctx context.Context, from, to, text, ref string) (string, error) {
	var bad *frameError
	if !ValidName(to) {
		bad = errf(CodeBadName, "invalid recipient name")
	}
	return h.postAs(from, ref, text, bad, func() (string, *frameError) {
		ev := event{Kind: kindDM, User: from, To: to, Text: text}
		pub, fe := h.postDM(ctx, nil, &ev, h.apiKey(from, ref, to, text))
		return dmID(pub, ev), fe
	})
}

// postAs checks a post of the server API (badTarget: what is wrong with
// its room or recipient, or nil), takes a token from the sender's rate
// limit, then runs post and returns the id of what it stored.
func (h *Hub) postAs(from, ref, text string, badTarget *frameError, post func() (string, *frameError)) (string, error) {
	fe := h.checkPost(from, ref, text)
	if fe == nil {
		fe = badTarget
	}
	if fe == nil {
		fe = h.allowSender(from)
	}
	if fe != nil {
		return "", fe.public()
	}
	id, fe := post()
	if fe != nil {
		return "", fe.public()
	}
	return id, nil
}

// checkPost validates what a post of the server API has in common with a
// send or dm frame, with the frames' codes.
func (h *Hub) checkPost(from, ref, text string) *frameError {
	if len(ref) > MaxRefBytes {
		return errf(CodeBadRef, "ref is longer than "+strconv.Itoa(MaxRefBytes)+" bytes")
	}
	if !ValidName(from) {
		return errf(CodeBadName, "invalid sender name")
	}
	return checkText(text, h.maxText)
}

// apiKey is the idempotency key of a post of the server API: with a ref,
// the one a connection of from would use (a repeat is stored once);
// without, one of its own, so that the hub's own retries of the publish
// are stored once.
func (h *Hub) apiKey(from, ref, to, text string) string {
	if ref != "" {
		return idempotencyKey(from, ref, to, text)
	}
	return "a\x00" + h.idPrefix + "\x00" + strconv.FormatUint(h.connSeq.Add(1), 36)
}

// History returns room's latest limit retained messages, oldest first,
// each encoded as a "message" frame, at most Config.HistoryBytes of
// them. limit 0 means Config.HistoryPage; it is capped at
// MaxHistoryLimit.
func (h *Hub) History(ctx context.Context, room string, limit int) ([][]byte, error) {
	if !ValidName(room) {
		return nil, errf(CodeBadRoom, "invalid room name").public()
	}
	if limit <= 0 {
		limit = h.page
	}
	limit = min(limit, MaxHistoryLimit)
	var res transport.HistoryResult
	err := h.patiently(ctx, nil, unavailableWait, func(ctx context.Context) (err error) {
		res, err = h.broker.History(ctx, roomPrefix+room, transport.HistoryRequest{Limit: limit})
		return err
	})
	if err != nil {
		return nil, h.brokerErr("history", err).public()
	}
	pubs := res.Publications
	if len(pubs) > limit {
		pubs = pubs[len(pubs)-limit:]
	}
	hist, _ := historyFrames(roomKindRoom, room, pubs, false)
	return fitNewest(hist, h.histBytes), nil
}

// Presence returns the users online in room on any node, sorted, as the
// broker's presence records them.
func (h *Hub) Presence(ctx context.Context, room string) ([]string, error) {
	if !ValidName(room) {
		return nil, errf(CodeBadRoom, "invalid room name").public()
	}
	var pres map[string][]string
	err := h.patiently(ctx, nil, unavailableWait, func(ctx context.Context) (err error) {
		pres, err = h.presence.Presence(ctx, roomPrefix+room)
		return err
	})
	if err != nil {
		return nil, h.brokerErr("presence", err).public()
	}
	users := make([]string, 0, len(pres))
	for u, nodes := range pres {
		if ValidName(u) && len(nodes) > 0 {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return users, nil
}

// Rooms lists the rooms this node is subscribed to (those with a member
// connected here), sorted by name. The brokers keep no list of every
// room in the cluster, so a room whose members are all on other nodes is
// not in it.
func (h *Hub) Rooms() []RoomInfo {
	var out []RoomInfo
	h.eachRoom(func(r *room) {
		r.mu.Lock()
		info := RoomInfo{Name: r.name, Members: len(r.online), Local: len(r.local)}
		if info.Local > 0 {
			info.Online = r.onlineUsers()
		}
		r.mu.Unlock()
		if info.Local > 0 {
			info.Owner = h.privateOwner(info.Name)
			out = append(out, info)
		}
	})
	slices.SortFunc(out, func(a, b RoomInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DisconnectUser closes every connection of user on every node with
// CloseDisconnected. It publishes an ephemeral notice on the user's DM
// inbox channel, to which each of the user's connections is subscribed,
// so it reaches exactly the nodes that hold one; a connection that is
// opening at that moment may miss it. The user may connect again.
func (h *Hub) DisconnectUser(ctx context.Context, user string) error {
	if !ValidName(user) {
		return errf(CodeBadName, "invalid user name").public()
	}
	ev := event{Kind: kindDisconnect, User: user}
	opts := transport.PublishOptions{Ephemeral: true}
	if _, fe := h.publish(ctx, nil, "publish disconnect", inboxPrefix+user, ev.marshal(), opts); fe != nil {
		return fe.public()
	}
	return nil
}

// disconnectAll closes the connections of every member; for an inbox,
// those of its user.
func (r *room) disconnectAll() {
	r.mu.Lock()
	members := slices.Collect(maps.Keys(r.members))
	r.mu.Unlock()
	for _, c := range members {
		c.disconnect(CloseDisconnected, "disconnected")
	}
}

// allowSender takes a token from from's bucket, or answers rate_limited:
// a program posting as a user gets no more than one connection of the
// user would.
func (h *Hub) allowSender(from string) *frameError {
	if !h.senders.allow(h.now(), from, h.rate, h.burst) {
		return errf(CodeRateLimited, "too many messages from "+from+", slow down")
	}
	return nil
}

// public turns a frame error into the Go API's *Error.
func (e *frameError) public() error {
	return &Error{Code: e.code, Message: e.msg}
}
