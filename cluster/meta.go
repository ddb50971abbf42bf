package cluster

import (
	"encoding/binary"
	"fmt"
)

// metaVersion is the encoding version written by this build. Decoders
// accept any version >= 1: later versions may only append fields, so an
// older node reads the fields it knows and ignores the rest.
const metaVersion = 1

// NodeMeta is what a node advertises about itself through gossip. Its
// encoding must stay under memberlist.MetaMaxSize (512 bytes).
type NodeMeta struct {
	Name string // node name (memberlist carries it too; kept for checks)
	HTTP string // advertised HTTP base URL
	Data []byte // opaque, for the broker; may be nil
}

// MarshalBinary encodes m as: version byte, then each field as a uvarint
// length followed by its bytes.
func (m NodeMeta) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen16+len(m.Name)+len(m.HTTP)+len(m.Data))
	b = append(b, metaVersion)
	for _, f := range [][]byte{[]byte(m.Name), []byte(m.HTTP), m.Data} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote (or a later version).
func (m *NodeMeta) UnmarshalBinary(b []byte) error {
	if len(b) == 0 || b[0] < 1 {
		return fmt.Errorf("%w: missing or zero version", ErrBadMeta)
	}
	b = b[1:]
	var fields [3][]byte
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return fmt.Errorf("%w: field %d truncated", ErrBadMeta, i)
		}
		fields[i] = b[k : k+int(n)]
		b = b[k+int(n):]
	}
	m.Name = string(fields[0])
	m.HTTP = string(fields[1])
	m.Data = nil
	if len(fields[2]) > 0 {
		m.Data = append([]byte(nil), fields[2]...)
	}
	return nil
}
