package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/publish"
)

// runPublish hands the publish command line to the server API client,
// with the environment read as for every other command.
func runPublish(ctx context.Context, args []string, stdout io.Writer, lookupEnv func(string) (string, bool)) error {
	env := publish.Env{
		Apply: func(fs *flag.FlagSet) error { return applyEnv(fs, lookupEnv) },
		Name:  envName,
	}
	err := publish.Main(ctx, args, env, os.Stdin, stdout)
	if errors.Is(err, publish.ErrUsage) {
		return usageError(err)
	}
	return err
}
