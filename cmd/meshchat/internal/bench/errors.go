package bench

import "errors"

var (
	// ErrUsage reports bad flags or flag values.
	ErrUsage = errors.New("bench: usage")
	// ErrUnknownScenario reports a --scenario name that is not in the table.
	ErrUnknownScenario = errors.New("bench: unknown scenario")
	// ErrNoTargets reports a run with neither --targets nor --spawn.
	ErrNoTargets = errors.New("bench: no targets (pass --targets URL,... or --spawn mesh|redis)")
	// ErrNotReady reports a cluster that did not become ready in time.
	ErrNotReady = errors.New("bench: cluster not ready")
	// ErrSetup reports clients that could not all connect and join.
	ErrSetup = errors.New("bench: setup failed")
	// ErrCheckFailed is returned with --strict when a run lost or
	// duplicated deliveries.
	ErrCheckFailed = errors.New("bench: delivery check failed")
)
