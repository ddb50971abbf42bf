package chat

import "errors"

// Sentinel errors returned by the hub's Go API.
var (
	// ErrNoPresence is returned by New when the broker does not also
	// implement transport.PresenceManager.
	ErrNoPresence = errors.New("chat: broker does not implement transport.PresenceManager")
	// ErrClosed is returned after the hub has been shut down or a client
	// has been closed.
	ErrClosed = errors.New("chat: closed")
	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("chat: hub already started")
	// ErrNoNode is returned by New without Config.Node.
	ErrNoNode = errors.New("chat: no node name")
	// ErrNoBroker is returned by New without Config.Broker.
	ErrNoBroker = errors.New("chat: no broker")
	// ErrNegativeConfig is returned by New when a size or duration in
	// Config is negative.
	ErrNegativeConfig = errors.New("chat: negative size or duration in config")
)

// Error codes carried by "error" frames. They are stable snake_case
// strings that clients may switch on; docs/protocol.md lists them.
const (
	// CodeBadFrame: the frame is not a JSON object of the expected shape.
	CodeBadFrame = "bad_frame"
	// CodeUnknownType: the frame's type is not one the server knows.
	CodeUnknownType = "unknown_type"
	// CodeBadRoom: the room name is missing or not [A-Za-z0-9_.-]{1,32}.
	CodeBadRoom = "bad_room"
	// CodeBadName: the DM recipient is not a valid user name.
	CodeBadName = "bad_name"
	// CodeBadText: the text is empty, blank or longer than allowed.
	CodeBadText = "bad_text"
	// CodeBadRef: the ref is longer than MaxRefBytes.
	CodeBadRef = "bad_ref"
	// CodeNotJoined: send, typing or leave for a room the connection has
	// not joined.
	CodeNotJoined = "not_joined"
	// CodeTooManyRooms: the connection already holds MaxRooms rooms, or
	// its user created RoomsPerHour new rooms within the hour.
	CodeTooManyRooms = "too_many_rooms"
	// CodeRateLimited: the connection sends faster than its rate limit;
	// the frame was dropped.
	CodeRateLimited = "rate_limited"
	// CodeUnavailable: the broker cannot accept the request right now;
	// retrying later (with the same ref) is safe.
	CodeUnavailable = "unavailable"
	// CodeTooLarge: the WebSocket frame exceeded the server's frame limit
	// (sent by package web, which reads the frames).
	CodeTooLarge = "too_large"
	// CodeInternal: an unexpected server error.
	CodeInternal = "internal"
	// CodeForbidden: the user may not do that (a private room they are
	// not a member of; invite or remove without being the owner; delete
	// another user's message without being an admin).
	CodeForbidden = "forbidden"
	// CodeNotFound: no such private room; a delete of a message that is
	// not in the room's retained history.
	CodeNotFound = "not_found"
	// CodeRoomExists: a room with messages cannot be made private.
	CodeRoomExists = "room_exists"
	// CodeNoSuchUser: a DM to a name no account holds (accounts only).
	CodeNoSuchUser = "no_such_user"
)

// WebSocket close codes the server uses. A client reconnects on all of
// them except CloseLoggedOut, where it has to log in again, and
// CloseBanned.
const (
	// CloseNormal ends a connection the client asked to end.
	CloseNormal = 1000
	// CloseTooBig: a frame exceeded the hard size cap.
	CloseTooBig = 1009
	// CloseInternal: the server hit an unexpected error.
	CloseInternal = 1011
	// CloseServiceRestart: the node is shutting down; reconnect to
	// another node (the welcome frame listed them).
	CloseServiceRestart = 1012
	// CloseLoggedOut: the connection's session was logged out.
	CloseLoggedOut = 4001
	// CloseDisconnected: the server API disconnected the user
	// (Hub.DisconnectUser); the client may reconnect.
	CloseDisconnected = 4002
	// CloseBanned: the user was banned; logging in again fails too.
	CloseBanned = 4003
	// CloseRemoved: the user was removed from a private room the
	// connection was in; it reconnects, and that room refuses it.
	CloseRemoved = 4004
	// CloseSlowConsumer: the client did not read fast enough and its
	// outbound queue overflowed; reconnect and resume with join "after".
	CloseSlowConsumer = 4008
)

// Error is a client-visible failure of a request of the hub's Go API
// (PublishAs, DMAs, History, Presence, DisconnectUser, and the one-shot
// Send, DM and Typing): Code is one of the error frames' codes above,
// Message is for humans.
type Error struct {
	Code, Message string
}

func (e *Error) Error() string { return "chat: " + e.Code + ": " + e.Message }

// frameError is a client-visible failure of one frame.
type frameError struct {
	code, msg string
}

func (e *frameError) Error() string { return e.code + ": " + e.msg }

func errf(code, msg string) *frameError { return &frameError{code: code, msg: msg} }
