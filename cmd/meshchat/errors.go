package main

import "errors"

// errUsage marks errors caused by bad arguments; run exits with code 2.
var errUsage = errors.New("usage")
