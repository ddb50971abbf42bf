// Command meshchat runs meshchat, a self-hosted clustered chat server.
//
// Subcommands: serve (one node), demo (several nodes in one process), bench
// (load generator), publish (a message through the server API), version
// and help. Flags and their environment variables are described by
// `meshchat serve --help` and in the README.
//
// This package only turns flags and environment into a node.Config
// (flags.go, for serve and demo), prints help and dispatches subcommands
// (main.go, demo.go, bench.go). The node itself (wiring, keys, names,
// readiness, the stop order) is package node; everything that runs is
// started and stopped through a node's Start and Stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/meshchat/meshchat/cmd/meshchat/internal/publish"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// empty falls back to the module version from the build info.
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, stop, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

// run executes one subcommand and returns the process exit code. stop
// restores default signal handling: it is called once the first signal has
// started a graceful shutdown, so a second Ctrl-C ends the process at once.
func run(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, stop, rest, stdout, stderr, lookupEnv)
	case "demo":
		err = runDemo(ctx, stop, rest, stdout, stderr, lookupEnv)
	case "bench":
		err = runBench(ctx, rest, stdout, stderr)
	case "publish":
		env := publish.Env{Apply: func(fs *flag.FlagSet) error { return applyEnv(fs, lookupEnv) }, Name: envName}
		err = publish.Main(ctx, rest, env, os.Stdin, stdout)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "meshchat", buildVersion())
		return 0
	case "help", "-h", "--help", "-help":
		if len(rest) > 0 && rest[0] != "help" {
			return run(ctx, stop, []string{rest[0], "--help"}, stdout, stderr, lookupEnv)
		}
		printUsage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "meshchat: unknown command %q\n\n", cmd)
		printUsage(stderr)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage), errors.Is(err, publish.ErrUsage):
		fmt.Fprintln(stderr, "meshchat:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "meshchat:", err)
		return 1
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `meshchat: self-hosted clustered chat server.

Usage:
  meshchat serve [flags]     run one node (meshchat serve --help lists every flag)
  meshchat demo [flags]      run several joined nodes in one process
  meshchat bench [flags]     load-test a running cluster
  meshchat publish [flags]   post a message through a node's server API
  meshchat version           print the version
  meshchat help [command]    show help
`)
}

// buildVersion is the -X main.version value, else the module version and
// VCS revision recorded in the binary.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " " + rev + modified
	}
	return v + " " + bi.GoVersion
}

// redisLogger hands go-redis's internal messages (pool dial failures and
// the like) to slog, so they share the node's format and level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Log(ctx, slog.LevelDebug, fmt.Sprintf(format, v...), "component", "go-redis")
}

// routeRedisLogs installs redisLogger. go-redis keeps its logger in a
// package variable, so only the commands call this, once per process,
// never a Node.
func routeRedisLogs(log *slog.Logger) { goredis.SetLogger(redisLogger{log}) }

// runServe runs one node until ctx is done (SIGINT/SIGTERM), then stops it
// gracefully.
func runServe(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	cfg, err := parseServe(args, lookupEnv, stdout)
	if err != nil {
		return usageError(err)
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	cfg.Logger = log
	routeRedisLogs(log)
	n, err := node.New(cfg.Config)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	var failed error // the HTTP server died under us: stop the rest, report it
	select {
	case <-ctx.Done():
		log.Info("shutting down: signal received; a second signal forces exit")
	case failed = <-n.Done():
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), n.ShutdownTimeout())
	defer cancel()
	start := time.Now()
	if err := n.Stop(sctx); err != nil {
		return errors.Join(failed, fmt.Errorf("shutdown: %w", err))
	}
	if failed == nil {
		log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	}
	return failed
}
