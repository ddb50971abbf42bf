package main

import "errors"

// errUsage marks errors caused by bad arguments; run exits with code 2.
var errUsage = errors.New("usage")

// errNotReady is what /readyz reports while the node cannot serve.
var errNotReady = errors.New("node: not ready")

// errStopping is what /readyz reports once a graceful stop has begun, so a
// load balancer takes the node out before its listener closes.
var errStopping = errors.New("node: stopping")
