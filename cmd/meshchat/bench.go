package main

import (
	"context"
	"io"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/bench"
)

// runBench hands the bench command line to the load generator.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Main(ctx, args, stdout, stderr)
}
