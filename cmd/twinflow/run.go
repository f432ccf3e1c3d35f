package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/docker/go-units"

	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/spec"
)

func runCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	configPath := fs.String("config", "", "module spec (YAML): endpoints, ingresses, egresses")
	dataDir := fs.String("data", "data", "data directory (state and embedded NATS)")
	natsURL := fs.String("nats", "", "external NATS server URL; empty starts an embedded server")
	natsCreds := fs.String("nats-creds", "", "credentials file for the external NATS server")
	natsPort := fs.Int("nats-port", 0, "embedded NATS port on 127.0.0.1 (0: 4222, or a free port if taken; -1: a free port)")
	natsSync := fs.Duration("nats-sync", 0, "embedded NATS fsync interval (0: fsync every write)")
	admin := fs.String("admin", "127.0.0.1:8090", "admin API, /metrics and /healthz listen address")
	shards := fs.Int("shards", 0, "shard loops (default: number of cores)")
	keyGroups := fs.Int("key-groups", 0, "key groups K, fixed when the data dir is created (default 128)")
	interval := fs.Duration("checkpoint-interval", time.Second, "time between checkpoints")
	memory := fs.String("memory", "1GiB", "total memory budget (e.g. 512MiB, 2GiB; units are powers of 1024)")
	restore := fs.String("restore", "", "start from this savepoint (the data dir must have no state yet)")
	stopTimeout := fs.Duration("stop-timeout", 30*time.Second, "on stop, how long queued work may take to finish before the final checkpoint (and how long that may take)")
	dedupWindow := fs.Duration("dedup-window", 10*time.Minute, "how long a publish repeated with the same Nats-Msg-Id is dropped, across restarts")
	spillBudget := fs.String("spill-budget", "16GiB", "disk for address backlogs moved out of memory; intake pauses when it is used up")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	total, err := parseBytes(*memory)
	if err != nil {
		return fmt.Errorf("-memory: %w", err)
	}
	spill, err := parseBytes(*spillBudget)
	if err != nil {
		return fmt.Errorf("-spill-budget: %w", err)
	}
	module := &spec.Module{}
	if *configPath != "" {
		if module, err = spec.Load(*configPath); err != nil {
			return err
		}
	}
	if *restore != "" {
		if err := restoreSavepoint(*restore, filepath.Join(*dataDir, "state")); err != nil {
			return err
		}
		log.Info("restored savepoint", "from", *restore, "data", *dataDir)
	}
	cfg := runtime.Config{
		DataDir: *dataDir, Module: module, NATSURL: *natsURL, NATSCredsFile: *natsCreds, NATSPort: *natsPort,
		NATSSyncInterval: *natsSync, AdminAddr: *admin, Shards: *shards, KeyGroups: *keyGroups,
		CheckpointInterval: *interval, Memory: runtime.Memory{Total: total}, Logger: log,
		StopTimeout: *stopTimeout, DedupWindow: *dedupWindow, MaxSpillBytes: spill,
	}
	e, err := runtime.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// The Go heap gets what Pebble's parts of the budget leave.
	debug.SetMemoryLimit(e.Budget().GoMemoryLimit())
	fmt.Fprintf(os.Stderr, "twinflow running\n  nats:    %s\n  admin:   %s\n  metrics: %s/metrics\n  memory:  %s\n",
		e.NATSURL(), e.AdminURL(), e.AdminURL(), e.Budget())
	select {
	case <-ctx.Done():
	case <-e.Done():
		return nil
	}
	// A second signal ends the process at once: the last complete
	// checkpoint is where the next start resumes.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	log.Info("signal received; stopping cleanly (a second signal stops at once)", "deadline", 2**stopTimeout)
	stopped := make(chan error, 1)
	go func() {
		_, err := e.Stop(context.Background(), "")
		stopped <- err
	}()
	select {
	case err := <-stopped:
		return err
	case sig := <-again:
		log.Warn("second signal; exiting without a final checkpoint: the next start resumes from the last complete one", "signal", sig.String())
		return errors.New("stopped at once by a second signal")
	}
}

// restoreSavepoint copies a savepoint into a data dir that has no state.
func restoreSavepoint(from, to string) error {
	if entries, err := os.ReadDir(to); err == nil && len(entries) > 0 {
		return fmt.Errorf("-restore: %s already holds state; restore into a new data dir", to)
	}
	if _, err := os.Stat(from); err != nil {
		return fmt.Errorf("-restore: %w", err)
	}
	return runtime.RestoreSavepoint(from, to)
}

// parseBytes reads a positive size: a number of bytes, or a number with a
// binary unit, K, M, G or T, with an optional "iB" or "B" (512MiB, 2GiB, 1G
// and 1GB are all powers of 1024, as memory limits usually are).
func parseBytes(s string) (int64, error) {
	n, err := units.RAMInBytes(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size; use a number of bytes or e.g. 512MiB or 2GiB", s)
	}
	return n, nil
}
