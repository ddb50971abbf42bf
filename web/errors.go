package web

import "errors"

// ErrShuttingDown is returned for new connections once Shutdown began.
var ErrShuttingDown = errors.New("web: shutting down")

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
)
