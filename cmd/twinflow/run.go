package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

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
	memory := fs.String("memory", "1GiB", "total memory budget (e.g. 512MiB, 2GiB)")
	restore := fs.String("restore", "", "start from this savepoint (the data dir must have no state yet)")
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
		log.Info("signal received; stopping cleanly")
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.Stop(stopCtx, "")
		return err
	case <-e.Done():
		// Stopped by itself: it could not continue (a disk it cannot write).
		return e.Err()
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

// parseBytes reads sizes like 512MiB, 2GiB, 1G or a plain byte count.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return int64(v * float64(u.mult)), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, errors.New("bad size " + strconv.Quote(s) + "; use e.g. 512MiB or 2GiB")
	}
	return v, nil
}
