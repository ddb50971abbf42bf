package web

import "errors"

// Sentinel errors.
var (
	// ErrNoHub is returned by New without Config.Hub.
	ErrNoHub = errors.New("web: no hub")
	// ErrNoSessions is returned by New without Config.Sessions.
	ErrNoSessions = errors.New("web: no session store")
	// ErrNoRevocations is returned by New without Config.Revocations.
	ErrNoRevocations = errors.New("web: no session revocations")
	// ErrNoAccounts is returned by New for AuthPassword without
	// Config.Accounts.
	ErrNoAccounts = errors.New("web: --auth password needs the account table")
	// ErrNoJWTKey is returned by New for AuthJWT without Config.JWTKey.
	ErrNoJWTKey = errors.New("web: --auth jwt needs --jwt-key")
	// ErrNegativeConfig is returned by New for a negative limit or
	// duration in Config.
	ErrNegativeConfig = errors.New("web: negative limit in config")
)

// Why authenticate refused a request.
var (
	// errNoSession: no credentials, or none that are valid (401).
	errNoSession = errors.New("web: no valid session")
	// errRevocationsLoading: the credentials look valid but the node has
	// not loaded the cluster's logouts yet, so it cannot tell (503).
	errRevocationsLoading = errors.New("web: session revocations not loaded yet")
	// errSessionStore: the session store could not confirm the session
	// (503).
	errSessionStore = errors.New("web: session store unavailable")
	// errBanned: the user is banned (403).
	errBanned = errors.New("web: user banned")
	// errAccountsOff: no account table (--auth open or jwt without one).
	errAccountsOff = errors.New("web: no account table")
	// errBadTicket: a ticket that is malformed or not signed by the
	// cluster (401).
	errBadTicket = errors.New("web: bad ticket")
	// errOtherNode: a ticket for another node: the request's other
	// credentials decide, and without any it is refused as a bad ticket.
	errOtherNode = errors.New("web: ticket for another node")
	// errTicketExpired: a ticket past its expiry (401).
	errTicketExpired = errors.New("web: ticket expired")
	// errTicketUsed: a ticket presented a second time (401).
	errTicketUsed = errors.New("web: ticket used")
)

// Error codes of JSON error answers: {"error":{"code":..,"message":..}}.
const (
	CodeBadName         = "bad_name"
	CodeBadRequest      = "bad_request"
	CodeUnauthorized    = "unauthorized"
	CodeForbiddenOrigin = "forbidden_origin"
	CodeNotFound        = "not_found"
	CodeMethodNotAllow  = "method_not_allowed"
	CodeTooLarge        = "too_large"
	CodeUnavailable     = "unavailable"
	CodeNotReady        = "not_ready"
	CodeInternal        = "internal"
	CodeBadCredentials  = "bad_credentials"
	CodeNameTaken       = "name_taken"
	CodeWeakPassword    = "weak_password"
	CodeBanned          = "banned"
	CodeForbidden       = "forbidden"
	CodeTooManyAttempts = "too_many_attempts"
	CodeAccountsFull    = "accounts_full"
	CodeBadTicket       = "bad_ticket"
	CodeTicketExpired   = "ticket_expired"
	CodeTicketUsed      = "ticket_used"
	// CodeTooManyConnections answers a connection over the per-address
	// cap (LimitListener), before any request is read.
	CodeTooManyConnections = "too_many_connections"
)
