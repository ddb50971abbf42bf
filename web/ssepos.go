package web

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// An events stream's resume point is a list of positions, one per room
// and one for the DM inbox: the id of the last message the stream
// delivered there. It is written as entries "<room>:<message id>" and
// "@:<dm id>" ("@" is no room name), joined by ",", e.g.
// "general:4f-a1b2,random:9-a1b2,@:3-c0ff", and it is the SSE id of every
// event that moves a position. A reconnect hands it back in
// Last-Event-ID (or ?lastEventId=), and the stream resumes each room and
// the inbox right after it, as a WebSocket join with "after" does.
// Message ids contain neither "," nor ":", so a client that switches
// from a WebSocket may build one from the ids it saw.

// inboxKey names the DM inbox in a resume point.
const inboxKey = "@"

// maxResumeBytes bounds a resume point read from a request; a longer one
// is ignored (the stream starts without resuming).
const maxResumeBytes = 16 << 10

// positions is where an events stream stands. Only the stream's writer
// touches it.
type positions struct {
	in    map[string]bool   // the stream's rooms
	rooms map[string]string // room -> last message id, for rooms of in
	inbox string            // last DM id
	// inboxLive is set once the stream has delivered its dm_history:
	// before that, a DM that arrives live may be newer than DMs the
	// history has yet to deliver, and must not move the inbox's position.
	inboxLive bool
}

// parsePositions reads a resume point, keeping the positions of rooms
// and dropping malformed entries, which then start without resuming.
func parsePositions(s string, rooms []string) positions {
	p := positions{rooms: make(map[string]string, len(rooms)), in: make(map[string]bool, len(rooms))}
	for _, r := range rooms {
		p.in[r] = true
	}
	if len(s) > maxResumeBytes {
		return p
	}
	for entry := range strings.SplitSeq(s, ",") {
		key, id, ok := strings.Cut(entry, ":")
		if !ok || id == "" || strings.Contains(id, ":") {
			continue
		}
		if key == inboxKey {
			p.inbox = id
		} else if p.in[key] {
			p.rooms[key] = id
		}
	}
	return p
}

// String writes the resume point, rooms in name order, the inbox last.
func (p *positions) String() string {
	names := make([]string, 0, len(p.rooms))
	for r := range p.rooms {
		names = append(names, r)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, r := range names {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r)
		b.WriteByte(':')
		b.WriteString(p.rooms[r])
	}
	if p.inbox != "" {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(inboxKey + ":")
		b.WriteString(p.inbox)
	}
	return b.String()
}

// streamFrame is what an events stream reads of a server frame.
type streamFrame struct {
	Type      string `json:"type"`
	Room      string `json:"room"`
	ID        string `json:"id"`
	Code      string `json:"code"`
	Ref       string `json:"ref"`
	Recovered bool   `json:"recovered"`
	History   []struct {
		ID string `json:"id"`
	} `json:"history"`
}

// Frame prefixes the stream decodes; the others (presence, typing,
// welcome, ...) neither move a position nor need an answer.
var inspected = [][]byte{
	[]byte(`{"type":"message",`),
	[]byte(`{"type":"dm",`),
	[]byte(`{"type":"joined",`),
	[]byte(`{"type":"dm_history",`),
	[]byte(`{"type":"error",`),
}

// inspect decodes the parts of f the stream needs, when it has any.
func inspect(f []byte) (streamFrame, bool) {
	for _, p := range inspected {
		if bytes.HasPrefix(f, p) {
			var sf streamFrame
			return sf, json.Unmarshal(f, &sf) == nil
		}
	}
	return streamFrame{}, false
}

// update moves the positions past frame f and reports whether they
// changed.
func (p *positions) update(f streamFrame) bool {
	last := ""
	if n := len(f.History); n > 0 {
		last = f.History[n-1].ID
	}
	switch f.Type {
	case "message":
		if p.in[f.Room] && f.ID != "" {
			return p.setRoom(f.Room, f.ID)
		}
	case "joined":
		switch {
		case !p.in[f.Room]:
		case last != "":
			return p.setRoom(f.Room, last)
		case !f.Recovered:
			// The old position is gone from the room's history (or the
			// room has none): resuming from it would not recover.
			return p.setRoom(f.Room, "")
		}
	case "dm_history":
		p.inboxLive = true
		switch {
		case last != "":
			return p.setInbox(last)
		case !f.Recovered:
			return p.setInbox("")
		}
	case "dm":
		if p.inboxLive && f.ID != "" {
			return p.setInbox(f.ID)
		}
	}
	return false
}

func (p *positions) setRoom(room, id string) bool {
	old, had := p.rooms[room]
	if id == "" {
		delete(p.rooms, room)
		return had
	}
	p.rooms[room] = id
	return old != id
}

func (p *positions) setInbox(id string) bool {
	changed := p.inbox != id
	p.inbox = id
	return changed
}

// clone copies the positions, for another goroutine.
func (p *positions) clone() positions {
	c := *p
	c.rooms = maps.Clone(p.rooms)
	return c
}
