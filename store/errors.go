package store

import "errors"

// ErrNoRedis is returned by NewRedisSessions without a Redis client.
var ErrNoRedis = errors.New("store: no redis client")

// Errors of the session revocations.
var (
	// ErrEmptySession is returned by Revocations.Revoke for an empty id.
	ErrEmptySession = errors.New("store: empty session id")
	// ErrRevocationsNoNode is returned by NewRevocations without
	// RevocationConfig.Node.
	ErrRevocationsNoNode = errors.New("store: revocations: no node name")
	// ErrRevocationsNoBroker is returned by NewRevocations without
	// RevocationConfig.Broker.
	ErrRevocationsNoBroker = errors.New("store: revocations: no broker")
	// ErrRevocationsNegative is returned by NewRevocations when a size or
	// duration in RevocationConfig is negative.
	ErrRevocationsNegative = errors.New("store: revocations: negative size or duration in config")
	// ErrRevocationsStarted is returned by a second call to
	// Revocations.Start.
	ErrRevocationsStarted = errors.New("store: revocations already started")
)

// Errors of the accounts.
var (
	// ErrAccountsNoNode is returned by NewAccounts without
	// AccountsConfig.Node.
	ErrAccountsNoNode = errors.New("store: accounts: no node name")
	// ErrAccountsNoBroker is returned by NewAccounts without
	// AccountsConfig.Broker.
	ErrAccountsNoBroker = errors.New("store: accounts: no broker")
	// ErrAccountsNegative is returned by NewAccounts when a size or
	// duration in AccountsConfig is negative.
	ErrAccountsNegative = errors.New("store: accounts: negative size or duration in config")
	// ErrAccountsStarted is returned by a second call to Accounts.Start.
	ErrAccountsStarted = errors.New("store: accounts already started")
	// ErrAccountsLoading: the node has not loaded the accounts yet.
	ErrAccountsLoading = errors.New("store: accounts not loaded yet")
	// ErrAccountsFull: the account table holds MaxAccounts records.
	ErrAccountsFull = errors.New("store: account table full")
	// ErrNameTaken: the name is registered already.
	ErrNameTaken = errors.New("store: name taken")
	// ErrBadCredentials: unknown name or wrong password; deliberately
	// one error for both.
	ErrBadCredentials = errors.New("store: bad credentials")
	// ErrWeakPassword: shorter than MinPasswordLength.
	ErrWeakPassword = errors.New("store: password too short")
	// ErrPasswordTooLong: longer than MaxPasswordBytes.
	ErrPasswordTooLong = errors.New("store: password too long")
	// ErrDisplayTooLong: a display name over MaxDisplayBytes.
	ErrDisplayTooLong = errors.New("store: display name too long")
)

// Errors of the private rooms.
var (
	// ErrRoomsNoNode is returned by NewRooms without RoomsConfig.Node.
	ErrRoomsNoNode = errors.New("store: rooms: no node name")
	// ErrRoomsNoBroker is returned by NewRooms without RoomsConfig.Broker.
	ErrRoomsNoBroker = errors.New("store: rooms: no broker")
	// ErrRoomsNegative is returned by NewRooms when a size or duration in
	// RoomsConfig is negative.
	ErrRoomsNegative = errors.New("store: rooms: negative size or duration in config")
	// ErrRoomsStarted is returned by a second call to Rooms.Start.
	ErrRoomsStarted = errors.New("store: rooms already started")
	// ErrRoomsLoading: the node has not loaded the private rooms yet.
	ErrRoomsLoading = &CodedError{"unavailable", "private rooms are still loading; retry shortly"}
	// ErrRoomsFull: too many private rooms, or members in one.
	ErrRoomsFull = &CodedError{"too_many_rooms", "too many private rooms, or members in this one"}
	// ErrRoomTaken: the room is private already.
	ErrRoomTaken = &CodedError{"room_exists", "a private room of this name exists"}
	// ErrNoRoom: no private room of that name.
	ErrNoRoom = &CodedError{"not_found", "no private room of this name"}
	// ErrRemoveOwner: a room's owner cannot be removed from it.
	ErrRemoveOwner = &CodedError{"forbidden", "the owner stays in the room"}
)

// CodedError is an error clients may see, with the stable code of the
// error frame or JSON error that reports it.
type CodedError struct {
	code, message string
}

func (e *CodedError) Error() string { return e.message }

// Code is the error's stable code.
func (e *CodedError) Code() string { return e.code }
