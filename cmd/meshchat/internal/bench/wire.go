package bench

import (
	"encoding/json"
	"errors"
	"strconv"
)

// This file holds the hot-path codec: the bench reads every delivery of
// every member, so frames are scanned in place without reflection or
// allocation. Rare frames (welcome, errors) may take the slow path.

// errBadJSON reports a frame the scanner cannot read.
var errBadJSON = errors.New("bench: malformed frame")

// minTextSize is the smallest --size: room for the largest header
// "<publisher>.<seq>.<unix nanos>." the bench writes.
const minTextSize = 40

// appendText appends a message text of exactly size bytes (or the header
// alone if it is longer) carrying publisher, seq and the send time.
func appendText(b []byte, pub int, seq int64, sentNs int64, size int, pad string) []byte {
	start := len(b)
	b = strconv.AppendInt(b, int64(pub), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, sentNs, 10)
	b = append(b, '.')
	if n := size - (len(b) - start); n > 0 {
		for n > len(pad) {
			b = append(b, pad...)
			n -= len(pad)
		}
		b = append(b, pad[:n]...)
	}
	return b
}

// parseText reads what appendText wrote. ok is false for any other text
// (someone else talking in the room), which the bench ignores.
func parseText(t []byte) (pub int, seq int64, sentNs int64, ok bool) {
	var vals [3]int64
	i := 0
	for k := range vals {
		var v int64
		digits := 0
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			if digits == 19 {
				return 0, 0, 0, false
			}
			v = v*10 + int64(t[i]-'0')
			i++
			digits++
		}
		if digits == 0 || i >= len(t) || t[i] != '.' {
			return 0, 0, 0, false
		}
		i++
		vals[k] = v
	}
	if vals[0] > 1<<30 {
		return 0, 0, 0, false
	}
	return int(vals[0]), vals[1], vals[2], true
}

// frame is a server frame's fields the bench looks at, as raw JSON values
// (strings keep their quotes) that alias the read buffer.
type frame struct {
	typ, room, id, text, ref, code, history, recovered []byte
}

// parse fills f from one JSON object. Unknown fields are skipped, as the
// contract requires.
func (f *frame) parse(b []byte) error {
	*f = frame{}
	it := objIter{b: b}
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			f.typ = v
		case "room":
			f.room = v
		case "id":
			f.id = v
		case "text":
			f.text = v
		case "ref":
			f.ref = v
		case "code":
			f.code = v
		case "history":
			f.history = v
		case "recovered":
			f.recovered = v
		}
	}
	return it.err
}

// isString reports whether raw is the JSON string s (s has no escapes).
func isString(raw []byte, s string) bool {
	return len(raw) == len(s)+2 && raw[0] == '"' && string(raw[1:len(raw)-1]) == s
}

// strValue returns the content of a JSON string value. Strings without
// escapes alias raw; escaped ones (never written by the bench) are decoded.
func strValue(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c == '\\' {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return in, true
}

// objIter walks the top-level members of a JSON object.
type objIter struct {
	b       []byte
	i       int
	started bool
	done    bool
	err     error
}

// next returns the next key (raw, unquoted, escapes kept) and raw value.
func (it *objIter) next() (key, val []byte, ok bool) {
	if it.done || it.err != nil {
		return nil, nil, false
	}
	it.i = skipWS(it.b, it.i)
	if !it.started {
		if it.i >= len(it.b) || it.b[it.i] != '{' {
			return it.fail()
		}
		it.started = true
		it.i = skipWS(it.b, it.i+1)
		if it.i < len(it.b) && it.b[it.i] == '}' {
			it.done = true
			return nil, nil, false
		}
	} else {
		if it.i >= len(it.b) {
			return it.fail()
		}
		switch it.b[it.i] {
		case '}':
			it.done = true
			return nil, nil, false
		case ',':
			it.i = skipWS(it.b, it.i+1)
		default:
			return it.fail()
		}
	}
	if it.i >= len(it.b) || it.b[it.i] != '"' {
		return it.fail()
	}
	end, err := skipString(it.b, it.i)
	if err != nil {
		return it.fail()
	}
	key = it.b[it.i+1 : end-1]
	it.i = skipWS(it.b, end)
	if it.i >= len(it.b) || it.b[it.i] != ':' {
		return it.fail()
	}
	it.i = skipWS(it.b, it.i+1)
	start := it.i
	end, err = skipValue(it.b, it.i)
	if err != nil {
		return it.fail()
	}
	it.i = end
	return key, it.b[start:end], true
}

func (it *objIter) fail() ([]byte, []byte, bool) {
	it.err = errBadJSON
	return nil, nil, false
}

// arrIter walks the elements of a JSON array.
type arrIter struct {
	b       []byte
	i       int
	started bool
	done    bool
	err     error
}

// next returns the next raw element.
func (it *arrIter) next() ([]byte, bool) {
	if it.done || it.err != nil {
		return nil, false
	}
	it.i = skipWS(it.b, it.i)
	if !it.started {
		if it.i >= len(it.b) || it.b[it.i] != '[' {
			it.err = errBadJSON
			return nil, false
		}
		it.started = true
		it.i = skipWS(it.b, it.i+1)
		if it.i < len(it.b) && it.b[it.i] == ']' {
			it.done = true
			return nil, false
		}
	} else {
		if it.i >= len(it.b) {
			it.err = errBadJSON
			return nil, false
		}
		switch it.b[it.i] {
		case ']':
			it.done = true
			return nil, false
		case ',':
			it.i = skipWS(it.b, it.i+1)
		default:
			it.err = errBadJSON
			return nil, false
		}
	}
	start := it.i
	end, err := skipValue(it.b, it.i)
	if err != nil {
		it.err = err
		return nil, false
	}
	it.i = end
	return it.b[start:end], true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i]=='"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errBadJSON
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errBadJSON
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			j++
		}
		if j == i {
			return 0, errBadJSON
		}
		return j, nil
	}
}
