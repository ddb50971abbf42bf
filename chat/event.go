package chat

import (
	"encoding/json"

	"github.com/meshchat/meshchat/transport"
)

// Event kinds on the broker.
const (
	kindMessage  = "m" // stored, on r:<room>
	kindDM       = "d" // stored, on u:<to> and u:<from>
	kindPresence = "p" // ephemeral, on r:<room>
	kindTyping   = "t" // ephemeral, on r:<room>
	kindRevoke   = "s" // stored, on s:revoked
	// kindRevokeSnapshot is one part of a compaction of s:revoked: every
	// revocation still unexpired when it was taken (see revoke.go).
	kindRevokeSnapshot = "S"
)

// Channel names and prefixes.
const (
	roomPrefix     = "r:"
	inboxPrefix    = "u:"
	revokedChannel = "s:revoked"
)

// event is the payload the hub publishes. Field names are short because
// every stored message carries them in every channel's history.
type event struct {
	Kind    string `json:"k"`
	User    string `json:"u,omitempty"`  // author, typer, presence subject
	To      string `json:"to,omitempty"` // DM recipient
	Text    string `json:"t,omitempty"`
	Conn    string `json:"c,omitempty"` // originating connection id
	Ref     string `json:"r,omitempty"` // client ref, echoed to Conn only
	Node    string `json:"n,omitempty"` // presence: node the user is on; revocation: node that published it
	Online  bool   `json:"o,omitempty"` // presence
	Session string `json:"s,omitempty"` // revocation: session id
	Until   int64  `json:"e,omitempty"` // revocation: Unix ms it matters until
	// Revoked is a snapshot part: session id -> Unix ms it matters until.
	Revoked map[string]int64 `json:"l,omitempty"`
	Part    int              `json:"i,omitempty"`  // snapshot part, from 0
	Parts   int              `json:"pn,omitempty"` // snapshot parts in all
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
