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
