package mesh

import (
	"encoding/binary"

	"github.com/meshchat/meshchat/transport"
)

// Wire format. A WebSocket binary message carries one or more messages,
// each prefixed by its length as a uvarint, so the writer can batch
// whatever is queued into one frame. A message starts with its kind:
//
//	request:  kindRequest  id:uvarint op:byte channel:str body
//	response: kindResponse id:uvarint status:byte [error:str if status != 0] body
//	          (stNotOwner: body is the hint, node:str addr:str)
//	delivery: kindDelivery channel:str publication
//	notice:   kindNotice channel:str
//
// A notice asks the receiver to re-register its side of the channel with
// the channel's owner (subscription with its last position, present
// users): the sender took the channel over, or could not deliver some of
// its publications to the receiver.
//
// str and bytes are a uvarint length then the bytes; a publication is
// offset:uvarint epoch:str time:varint data:bytes. Hand-rolled binary
// rather than JSON: payloads are opaque bytes (JSON would base64 them),
// the hot path (delivery) encodes once per publication and shares the
// bytes across every link, and decoding needs no reflection.
const (
	kindRequest  byte = 1
	kindResponse byte = 2
	kindDelivery byte = 3
	kindNotice   byte = 4
)

// Request operations.
const (
	opPublish        byte = 1 // flags key data -> publication
	opHistory        byte = 2 // since? limit -> latest recovered pubs
	opSubscribe      byte = 3 // since? -> latest pubs-to-deliver
	opUnsubscribe    byte = 4
	opPresenceAdd    byte = 5 // user
	opPresenceRemove byte = 6 // user
	opPresenceSet    byte = 7 // users (replaces this node's set)
	opPresenceQuery  byte = 8 // -> user nodes...
	// 9 was opReplicate (one copy), replaced by opReplicateBatch: not
	// to be reused.
	opSnapshot       byte = 10 // snapshot -> (stNotOwner)
	opState          byte = 11 // asker addr -> has snapshot (or stNotOwner: refused)
	opReplicateBatch byte = 12 // n (publication key)*n -> (stNeedSync, stNotOwner)
)

// Response status codes.
const (
	stOK          byte = 0
	stNotOwner    byte = 1
	stNeedSync    byte = 2
	stUnavailable byte = 3
	stBadRequest  byte = 4
	stLinkDown    byte = 255 // never sent: a link's own failure of its pending requests
)

const flagEphemeral byte = 1

type enc []byte

func (e enc) u(v uint64) enc                     { return binary.AppendUvarint(e, v) }
func (e enc) i(v int64) enc                      { return binary.AppendVarint(e, v) }
func (e enc) byte1(b byte) enc                   { return append(e, b) }
func (e enc) str(s string) enc                   { return append(e.u(uint64(len(s))), s...) }
func (e enc) bytes(p []byte) enc                 { return append(e.u(uint64(len(p))), p...) }
func (e enc) bool1(v bool) enc                   { return e.byte1(b2u(v)) }
func (e enc) pos(p transport.StreamPosition) enc { return e.u(p.Offset).str(p.Epoch) }
func (e enc) pub(p transport.Publication) enc {
	return e.u(p.Offset).str(p.Epoch).i(p.Time).bytes(p.Data)
}
func (e enc) append(p []byte) enc { return append(e, p...) }

// pubs writes a list of publications: n:uvarint publication*n.
func (e enc) pubs(ps []transport.Publication) enc {
	e = e.u(uint64(len(ps)))
	for _, p := range ps {
		e = e.pub(p)
	}
	return e
}

func b2u(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// dec reads what enc wrote. The first failure sticks: callers decode
// everything and check err once.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() { d.err = errBadFrame; d.b = nil }

func (d *dec) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// i reads what enc.i wrote: a uvarint that zig-zag encodes the value, as
// binary.Varint decodes it.
func (d *dec) i() int64 {
	ux := d.u()
	v := int64(ux >> 1)
	if ux&1 != 0 {
		v = ^v
	}
	return v
}

func (d *dec) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) bool1() bool { return d.byte1() != 0 }

// raw returns the next length-prefixed field without copying.
func (d *dec) raw() []byte {
	n := d.u()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.raw()) }

// bytes returns a copy: decoded payloads outlive the frame buffer (they
// go into history), and must not pin a whole batched frame.
func (d *dec) bytes() []byte {
	r := d.raw()
	if r == nil {
		return nil
	}
	return append(make([]byte, 0, len(r)), r...)
}

func (d *dec) pos() transport.StreamPosition {
	return transport.StreamPosition{Offset: d.u(), Epoch: d.str()}
}

// since reads an optional position (has:bool [position]), as History
// and Subscribe send it. It returns a value, not a pointer, so that the
// position stays on the caller's stack.
func (d *dec) since() (transport.StreamPosition, bool) {
	if !d.bool1() {
		return transport.StreamPosition{}, false
	}
	return d.pos(), true
}

// noticeMsg is a notice about ch: "re-register with the owner".
func noticeMsg(ch string) []byte {
	return enc(make([]byte, 0, 2+len(ch))).byte1(kindNotice).str(ch)
}

// pubs reads what enc.pubs wrote; nil for an empty list.
func (d *dec) pubs() []transport.Publication {
	n := d.count()
	if n == 0 {
		return nil
	}
	out := make([]transport.Publication, 0, n)
	for ; n > 0 && d.err == nil; n-- {
		out = append(out, d.pub())
	}
	return out
}

func (d *dec) pub() transport.Publication {
	p := transport.Publication{Offset: d.u(), Epoch: d.str(), Time: d.i()}
	p.Data = d.bytes()
	if p.Data == nil && d.err == nil {
		p.Data = []byte{}
	}
	return p
}

// count reads a collection length and rejects lengths that cannot fit in
// the remaining bytes (each element takes at least one byte), so a
// hostile length cannot make the decoder allocate a huge slice.
func (d *dec) count() int {
	n := d.u()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

// snapshot is a channel's full state, sent to a new backup and returned
// to a node taking over ownership.
type snapshot struct {
	Epoch    string
	Offset   uint64
	LastTime int64
	Pubs     []transport.Publication
	Dedupe   []dedupeEntry
	Interest []string
	Presence map[string][]string // user -> nodes
}

func (e enc) snapshot(s *snapshot) enc {
	e = e.str(s.Epoch).u(s.Offset).i(s.LastTime).pubs(s.Pubs)
	e = e.u(uint64(len(s.Dedupe)))
	for _, d := range s.Dedupe {
		e = e.str(d.key).i(d.at).pub(d.pub)
	}
	e = e.u(uint64(len(s.Interest)))
	for _, n := range s.Interest {
		e = e.str(n)
	}
	e = e.u(uint64(len(s.Presence)))
	for u, ns := range s.Presence {
		e = e.str(u).u(uint64(len(ns)))
		for _, n := range ns {
			e = e.str(n)
		}
	}
	return e
}

func (d *dec) snapshot() *snapshot {
	s := &snapshot{Epoch: d.str(), Offset: d.u(), LastTime: d.i(), Pubs: d.pubs()}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		s.Dedupe = append(s.Dedupe, dedupeEntry{key: d.str(), at: d.i(), pub: d.pub()})
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		s.Interest = append(s.Interest, d.str())
	}
	s.Presence = make(map[string][]string)
	for n := d.count(); n > 0 && d.err == nil; n-- {
		u := d.str()
		var ns []string
		for m := d.count(); m > 0 && d.err == nil; m-- {
			ns = append(ns, d.str())
		}
		s.Presence[u] = ns
	}
	return s
}
