package chat

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Frame types a client may send.
const (
	typeJoin   = "join"
	typeLeave  = "leave"
	typeSend   = "send"
	typeDM     = "dm"
	typeTyping = "typing"
	typeDelete = "delete"
	typeDMs    = "dms"  // extension: DM inbox resume
	typePing   = "ping" // extension: application-level keepalive
	typeInvite = "invite"
	typeRemove = "remove"
)

// MaxRefBytes bounds a frame's ref: it is echoed back and becomes part of
// an idempotency key, so it must stay small.
const MaxRefBytes = 64

// maxAfterBytes bounds an "after" id; longer ones cannot be ours.
const maxAfterBytes = 256

// inFrame is a decoded client frame. Unknown fields are ignored.
type inFrame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	After string `json:"after"`
	Text  string `json:"text"`
	To    string `json:"to"`
	Ref   string `json:"ref"`
	// Private, on a join, creates the room as a private one when it
	// does not exist yet.
	Private bool `json:"private"`
	// User is the member an invite or remove frame names.
	User string `json:"user"`
	// ID is the message a delete frame names.
	ID string `json:"id"`
}

// decodeFrame parses and validates one client frame. On failure it still
// returns the frame's ref when it could be read, so the error can echo it.
func decodeFrame(data []byte, maxText int) (inFrame, *frameError) {
	var f inFrame
	if err := json.Unmarshal(data, &f); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return inFrame{}, errf(CodeBadFrame, "frame is not a JSON object")
		}
		// A field of the wrong type: the rest was decoded, keep the ref
		// so the client can match the error to its frame.
		ref := f.Ref
		if len(ref) > MaxRefBytes {
			ref = ""
		}
		return inFrame{Ref: ref}, errf(CodeBadFrame, "field "+strconv.Quote(te.Field)+" has the wrong type")
	}
	ferr := f.validate(maxText) // may clear f.Ref
	return f, ferr
}

// validate checks a decoded frame, the same for every way a frame
// arrives (a WebSocket message, a one-shot request). A ref that is too
// long is cleared, so that the error does not echo it.
func (f *inFrame) validate(maxText int) *frameError {
	if len(f.Ref) > MaxRefBytes {
		f.Ref = ""
		return errf(CodeBadRef, "ref is longer than "+strconv.Itoa(MaxRefBytes)+" bytes")
	}
	switch f.Type {
	case "":
		return errf(CodeBadFrame, "frame has no type")
	case typeJoin:
		if !ValidName(f.Room) {
			return errf(CodeBadRoom, "invalid room name")
		}
		if len(f.After) > maxAfterBytes {
			// Not an id of ours: resume is impossible, not an error.
			f.After = "-"
		}
	case typeLeave, typeTyping:
		if !ValidName(f.Room) {
			return errf(CodeBadRoom, "invalid room name")
		}
	case typeSend:
		if !ValidName(f.Room) {
			return errf(CodeBadRoom, "invalid room name")
		}
		if e := checkText(f.Text, maxText); e != nil {
			return e
		}
	case typeDM:
		if !ValidName(f.To) {
			return errf(CodeBadName, "invalid user name")
		}
		if e := checkText(f.Text, maxText); e != nil {
			return e
		}
	case typeDelete:
		if !ValidName(f.Room) {
			return errf(CodeBadRoom, "invalid room name")
		}
		if f.ID == "" {
			return errf(CodeBadFrame, "frame has no message id")
		}
	case typeInvite, typeRemove:
		if !ValidName(f.Room) {
			return errf(CodeBadRoom, "invalid room name")
		}
		if !ValidName(f.User) {
			return errf(CodeBadName, "invalid user name")
		}
	case typeDMs:
		if len(f.After) > maxAfterBytes {
			f.After = "-"
		}
	case typePing:
	default:
		return errf(CodeUnknownType, "unknown frame type")
	}
	return nil
}

func checkText(s string, max int) *frameError {
	if strings.TrimSpace(s) == "" {
		return errf(CodeBadText, "text is empty")
	}
	if len(s) > max {
		return errf(CodeBadText, "text is longer than "+strconv.Itoa(max)+" bytes")
	}
	return nil
}

// MaxNameLen is the longest user or room name.
const MaxNameLen = 32

// ValidName reports whether s is a valid user or room name: 1 to 32
// letters, digits, '_', '.' or '-'.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// Message ids encode the channel position of a stored publication as
// "<offset base36>-<epoch>". Clients treat them as opaque; the server
// parses them back for resume. Offsets in base 36 contain no '-', so the
// first '-' separates the two parts whatever the epoch looks like.

func appendID(b []byte, offset uint64, epoch string) []byte {
	b = strconv.AppendUint(b, offset, 36)
	b = append(b, '-')
	return append(b, epoch...)
}

func formatID(offset uint64, epoch string) string {
	return string(appendID(make([]byte, 0, 16+len(epoch)), offset, epoch))
}

func parseID(s string) (offset uint64, epoch string, ok bool) {
	i := strings.IndexByte(s, '-')
	if i <= 0 {
		return 0, "", false
	}
	off, err := strconv.ParseUint(s[:i], 36, 64)
	if err != nil || off == 0 {
		return 0, "", false
	}
	return off, s[i+1:], true
}

// Outbound frames are built by appending, not by reflection: message
// frames are built once per publication per node and this keeps that
// cheap and allocation-light.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendIDString appends a message id as a JSON string.
func appendIDString(b []byte, offset uint64, epoch string) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, offset, 36)
	b = append(b, '-')
	b = appendEscaped(b, epoch)
	return append(b, '"')
}

// appendEscaped appends the body of a JSON string holding s. Invalid
// UTF-8 becomes U+FFFD, and U+2028/U+2029 are escaped so the output is
// also valid JavaScript.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendMessage appends a "message" frame without ref.
func appendMessage(b []byte, room string, pub pubInfo, from, text string) []byte {
	b = append(b, `{"type":"message","room":`...)
	b = appendString(b, room)
	b = append(b, `,"id":`...)
	b = appendIDString(b, pub.offset, pub.epoch)
	b = appendField(b, "from", from)
	b = appendField(b, "text", text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, pub.ts, 10)
	return append(b, '}')
}

// appendDM appends a "dm" frame without ref. Its id is id, or, when id
// is empty, the publication's position in its inbox (see event.ID).
func appendDM(b []byte, pub pubInfo, id, from, to, text string) []byte {
	b = append(b, `{"type":"dm","id":`...)
	if id != "" {
		b = appendString(b, id)
	} else {
		b = appendIDString(b, pub.offset, pub.epoch)
	}
	b = appendField(b, "from", from)
	b = appendField(b, "to", to)
	b = appendField(b, "text", text)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, pub.ts, 10)
	return append(b, '}')
}

// appendDeleted appends a "deleted" frame: the message id of room was
// deleted by user by.
func appendDeleted(b []byte, room, id, by string) []byte {
	b = append(b, `{"type":"deleted","room":`...)
	b = appendString(b, room)
	b = appendField(b, "id", id)
	b = appendField(b, "by", by)
	return append(b, '}')
}

// withRef returns a copy of the frame f (a JSON object) with "ref" added.
func withRef(f []byte, ref string) []byte {
	b := make([]byte, 0, len(f)+len(ref)+10)
	b = append(b, f[:len(f)-1]...)
	b = appendField(b, "ref", ref)
	return append(b, '}')
}

func presenceFrame(room, user string, online bool) []byte {
	b := make([]byte, 0, 64+len(room)+len(user))
	b = append(b, `{"type":"presence","room":`...)
	b = appendString(b, room)
	b = appendField(b, "user", user)
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, online)
	return append(b, '}')
}

func typingFrame(room, user string) []byte {
	b := make([]byte, 0, 48+len(room)+len(user))
	b = append(b, `{"type":"typing","room":`...)
	b = appendString(b, room)
	b = appendField(b, "user", user)
	return append(b, '}')
}

func leftFrame(room string) []byte {
	b := append([]byte(`{"type":"left","room":`), nil...)
	b = appendString(b, room)
	return append(b, '}')
}

func pongFrame(ref string) []byte {
	b := []byte(`{"type":"pong"`)
	if ref != "" {
		b = appendField(b, "ref", ref)
	}
	return append(b, '}')
}

// ErrorFrame encodes an "error" frame; ref is included when non-empty.
func ErrorFrame(code, message, ref string) []byte {
	b := make([]byte, 0, 48+len(code)+len(message)+len(ref))
	b = append(b, `{"type":"error","code":`...)
	b = appendString(b, code)
	b = appendField(b, "message", message)
	if ref != "" {
		b = appendField(b, "ref", ref)
	}
	return append(b, '}')
}

func welcomeFrame(user, node string, nodes []string) []byte {
	b := []byte(`{"type":"welcome","user":`)
	b = appendString(b, user)
	b = appendField(b, "node", node)
	b = append(b, `,"nodes":`...)
	b = appendStrings(b, nodes)
	return append(b, '}')
}

func joinedFrame(room string, members []string, history [][]byte, recovered bool) []byte {
	return joinedFrameOf(room, members, history, recovered, "")
}

// joinedFrameOf is joinedFrame with "private":true and the "owner" of a
// private room, whose owner is not "".
func joinedFrameOf(room string, members []string, history [][]byte, recovered bool, owner string) []byte {
	n := 112 + len(room) + len(owner)
	for _, h := range history {
		n += len(h) + 1
	}
	for _, m := range members {
		n += len(m) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"joined","room":`...)
	b = appendString(b, room)
	b = append(b, `,"members":`...)
	b = appendStrings(b, members)
	b = appendHistory(b, history)
	b = append(b, `,"recovered":`...)
	b = strconv.AppendBool(b, recovered)
	if owner != "" {
		b = append(b, `,"private":true`...)
		b = appendField(b, "owner", owner)
	}
	return append(b, '}')
}

func dmHistoryFrame(history [][]byte, recovered bool) []byte {
	n := 64
	for _, h := range history {
		n += len(h) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"dm_history"`...)
	b = appendHistory(b, history)
	b = append(b, `,"recovered":`...)
	b = strconv.AppendBool(b, recovered)
	return append(b, '}')
}

func appendHistory(b []byte, history [][]byte) []byte {
	b = append(b, `,"history":[`...)
	for i, h := range history {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, h...)
	}
	return append(b, ']')
}
