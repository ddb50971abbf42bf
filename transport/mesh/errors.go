package mesh

import "errors"

// ErrAuth means a peer's handshake failed authentication: wrong key,
// stale timestamp, replayed nonce or a name mismatch.
var ErrAuth = errors.New("mesh: peer authentication failed")

// errNotOwner is answered by a node asked to act as a channel's owner when
// its view of the membership says it is not. Callers retry briefly (the
// views converge within a gossip round) and then report ErrUnavailable.
var errNotOwner = errors.New("mesh: not the channel owner")

// errNeedSync is answered by a backup whose replica does not continue with
// the replicated publication; the owner then sends a full snapshot.
var errNeedSync = errors.New("mesh: replica needs a snapshot")

// errBadFrame means a frame could not be decoded.
var errBadFrame = errors.New("mesh: malformed frame")
