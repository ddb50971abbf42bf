package mesh

import (
	"errors"
	"fmt"

	"github.com/meshchat/meshchat/transport"
)

// ErrAuth means a peer's handshake failed authentication: wrong key,
// stale timestamp, replayed nonce or a name mismatch.
var ErrAuth = errors.New("mesh: peer authentication failed")

// ErrNoQuorum is answered for a request that needs a channel's order
// while this node sees no majority of the cluster's voting nodes (see
// Quorum): it is on the minority side of a partition, or alone. It is
// transport.ErrUnavailable, so clients retry and fail over to a node of
// the majority.
var ErrNoQuorum = fmt.Errorf("mesh: no quorum, this node sees no majority of the cluster: %w", transport.ErrUnavailable)

// errNotOwner is answered by a node asked to act as a channel's owner when
// its view of the membership says it is not, or when it handed the channel
// over and has not seen the membership change since. Callers follow the
// hint it carries (see notOwnerError), retry briefly (the views converge
// within a gossip round) and then report ErrUnavailable.
var errNotOwner = errors.New("mesh: not the channel owner")

// errNeedSync is answered by a backup whose replica does not continue with
// the replicated publication; the owner then sends a full snapshot.
var errNeedSync = errors.New("mesh: replica needs a snapshot")

// errPeerDown means a request could not reach a peer, or its connection
// was lost before the answer came: the link was down, its queue full or
// closed, or the connection failed. Unlike a peer that answered (even
// "unavailable"), such a peer may be dead: a takeover goes on without it.
var errPeerDown = errors.New("mesh: peer unreachable")

// errBadFrame means a frame could not be decoded.
var errBadFrame = errors.New("mesh: malformed frame")

// errFrameAuth means a frame failed to decrypt on a connection: altered,
// replayed, reordered or sealed with another key. The connection is
// closed.
var errFrameAuth = errors.New("mesh: frame failed authentication")

// notOwnerError is errNotOwner with the node the answerer believes orders
// the channel (the owner in its view, or the node it handed the channel
// to), so the caller can go there directly instead of waiting for its own
// view to catch up. The hint carries the address too: the caller may not
// know that node yet.
type notOwnerError struct {
	hint transport.Peer // zero when the answerer had none
}

func (e *notOwnerError) Error() string {
	if e.hint.Name == "" {
		return errNotOwner.Error()
	}
	return errNotOwner.Error() + " (try " + e.hint.Name + ")"
}

func (e *notOwnerError) Is(target error) bool { return target == errNotOwner }

func notOwner(hint transport.Peer) error { return &notOwnerError{hint: hint} }

// hintOf returns the hint carried by a not-owner error, if any.
func hintOf(err error) (transport.Peer, bool) {
	var ne *notOwnerError
	if errors.As(err, &ne) && ne.hint.Name != "" {
		return ne.hint, true
	}
	return transport.Peer{}, false
}

// Errors of the history log (Bolt).
var (
	// ErrNotLog means the file is not a meshchat history log: corrupt,
	// another program's bbolt file, or not bbolt at all.
	ErrNotLog = errors.New("mesh: not a meshchat history log")
	// ErrLogLocked means another process has the log open.
	ErrLogLocked = errors.New("mesh: history log in use by another process")
	// ErrLogClosed is returned by calls after Close.
	ErrLogClosed = errors.New("mesh: history log closed")
	// ErrLogEpoch means an Append does not continue the stored stream's
	// epoch (Reset starts an epoch).
	ErrLogEpoch = errors.New("mesh: append outside the stored epoch")
)
