package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// Main runs `meshchat bench` with args (without the subcommand name). It
// prints the results table on stdout and logs and the progress bar on
// stderr; it returns an error when a run could not complete or, with
// --strict, when a run lost or duplicated deliveries.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if n, err := raiseNoFile(); err != nil {
		log.Warn("bench: could not raise the open-file limit", "err", err)
	} else if n > 0 && n < 2*uint64(maxClients(cfg))+256 {
		log.Warn("bench: open-file limit may be too low for the clients", "limit", n, "clients", maxClients(cfg))
	}

	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}

	var prog *progress
	if cfg.Progress || isTerminal(stderr) {
		prog = newProgress(stderr)
		defer prog.stop()
	}

	var (
		runs    []Result
		runErrs []error
	)
	record := func(res Result, err error) {
		if err != nil {
			res.Error = err.Error()
			runErrs = append(runErrs, fmt.Errorf("%s: %w", runLabel(res), err))
			log.Error("bench: run failed", "run", runLabel(res), "err", err)
		}
		runs = append(runs, res)
	}
	brokers := cfg.brokers()
	for _, sc := range cfg.Scenarios {
		if brokers == nil {
			prog.setPrefix(sc.Name)
			r := newRunner(sc, cfg, cfg.Targets, nil, log, prog)
			record(r.run(ctx))
		}
		for _, b := range brokers {
			if ctx.Err() != nil {
				break
			}
			prog.setPrefix(sc.Name + "/" + b)
			prog.phase("spawn", 0, nil)
			log.Info("bench: starting cluster", "broker", b, "nodes", cfg.Nodes, "scenario", sc.Name)
			res, err := spawnAndRun(ctx, cfg, sc, b, log, prog)
			record(res, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	prog.stop()

	rep := Report{
		Version:   1,
		Generated: time.Now().UTC(),
		Host:      Host{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GoVersion: runtime.Version()},
		Compare:   cfg.Compare,
		Runs:      runs,
	}
	if err := writeText(stdout, runs, cfg.Compare); err != nil {
		return err
	}
	if cfg.JSONFile != "" {
		if err := writeJSON(cfg.JSONFile, rep); err != nil {
			return fmt.Errorf("bench: writing %s: %w", cfg.JSONFile, err)
		}
	}
	if cfg.HTMLFile != "" {
		if err := writeHTML(cfg.HTMLFile, rep); err != nil {
			return fmt.Errorf("bench: writing %s: %w", cfg.HTMLFile, err)
		}
	}
	if cfg.SVGFile != "" {
		if err := writeFile(cfg.SVGFile, svgChart(runs)); err != nil {
			return fmt.Errorf("bench: writing %s: %w", cfg.SVGFile, err)
		}
	}
	if len(runErrs) > 0 {
		return errors.Join(runErrs...)
	}
	if cfg.Strict {
		for _, r := range runs {
			if r.Lost > 0 || r.Duplicated > 0 {
				return fmt.Errorf("%w: %s lost %d, duplicated %d", ErrCheckFailed, runLabel(r), r.Lost, r.Duplicated)
			}
		}
	}
	return ctx.Err()
}

// spawnAndRun starts a fresh cluster for one run, so every run begins
// from the same memory baseline, and stops it afterwards.
func spawnAndRun(ctx context.Context, cfg Config, sc Scenario, broker string, log *slog.Logger, prog *progress) (Result, error) {
	cl, err := startCluster(ctx, cfg, broker, log)
	if err != nil {
		return Result{Scenario: sc.Name, Broker: broker, Nodes: cfg.Nodes}, err
	}
	defer cl.stop()
	r := newRunner(sc, cfg, cl.urls, cl, log, prog)
	res, err := r.run(ctx)
	if res.Broker != "" && res.Broker != broker {
		log.Warn("bench: cluster reports another broker", "want", broker, "got", res.Broker)
	}
	res.Broker = broker
	return res, err
}

func maxClients(cfg Config) int {
	n := 0
	for _, s := range cfg.Scenarios {
		n = max(n, s.Clients)
	}
	return n
}
