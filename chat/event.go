package chat

import (
	"encoding/json"
	"strings"

	"github.com/meshchat/meshchat/transport"
)

// Event kinds on the broker.
const (
	kindMessage = "m" // stored, on r:<room>
	kindDM      = "d" // stored, on u:<to>, then on u:<from> with the id of the first
	// kindDelete is an annotation (annotate.go): stored, on r:<room>,
	// it deletes the room's message event.Target.
	kindDelete = "del"

	kindPresence = "p" // ephemeral, on r:<room>
	kindTyping   = "t" // ephemeral, on r:<room>
	// kindDisconnect closes every connection of the inbox's user, on
	// whichever node (the server API's DisconnectUser); ephemeral, on
	// u:<user>, to which every connection of the user is subscribed.
	kindDisconnect = "x"
	// kindInvited tells a user, on all their connections, that User
	// invited them (To) into the private room Text; ephemeral, on
	// u:<to>.
	kindInvited = "v"
)

// Channel prefixes. The hub owns "r:" and "u:"; "s:" channels belong to
// the node's other records (package store's session revocations, on
// s:revoked), and the hub hands their publications to
// Config.Revocations.
const (
	roomPrefix   = "r:"
	inboxPrefix  = "u:"
	systemPrefix = "s:"
)

// IsSystemChannel reports whether channel holds one of the node's own
// tables (logouts, accounts, private rooms) rather than chat traffic.
func IsSystemChannel(channel string) bool { return strings.HasPrefix(channel, systemPrefix) }

// event is the payload the hub publishes. Field names are short because
// every stored message carries them in every channel's history.
type event struct {
	Kind string `json:"k"`
	User string `json:"u,omitempty"`  // author, typer, presence subject
	To   string `json:"to,omitempty"` // DM recipient
	Text string `json:"t,omitempty"`
	Conn string `json:"c,omitempty"` // originating connection id
	Ref  string `json:"r,omitempty"` // client ref, echoed to Conn only
	// ID is a DM's id when it is not this copy's position: the sender's
	// copy carries the id of the recipient's copy (its position in the
	// recipient's inbox), so that both show one id. Empty on the
	// recipient's copy and on a DM to oneself, whose id is their position.
	ID     string `json:"i,omitempty"`
	Node   string `json:"n,omitempty"` // presence: node the user is on
	Online bool   `json:"o,omitempty"` // presence
	// Target is the id of the message an annotation refers to.
	Target string `json:"on,omitempty"`
}

func (e *event) marshal() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Only strings, bools and integers: Marshal cannot fail.
		panic("chat: marshal event: " + err.Error())
	}
	return b
}

func decodeEvent(data []byte) (event, bool) {
	var e event
	if err := json.Unmarshal(data, &e); err != nil || e.Kind == "" {
		return event{}, false
	}
	return e, true
}

// pubInfo is the position and time of a stored publication.
type pubInfo struct {
	offset uint64
	epoch  string
	ts     int64
}

func infoOf(p transport.Publication) pubInfo {
	return pubInfo{offset: p.Offset, epoch: p.Epoch, ts: p.Time}
}
