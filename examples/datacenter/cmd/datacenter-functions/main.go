// Command datacenter-functions serves the data-center twins
// (datacenter/server, datacenter/rack, datacenter/datacenter) as a Twinflow
// function endpoint, for deploy/datacenter/module.yaml:
//
//	datacenter-functions -listen 127.0.0.1:8000
//
// The twins read their settings from the environment: DATACENTER_ID (the
// data-center twin's id, "dc"), DATACENTER_SILENCE_TIMEOUT (how long a
// server may be silent before NO_REPORTS, "30s"),
// DATACENTER_WINDOW_SPACING (least time between kept reports, "5s") and
// DATACENTER_CORRELATION_DELAY (how long a rack lets its servers'
// incidents settle before it correlates them, "2s").
//
// It serves only calls the runtime signed: with the public keys in
// TWINFLOW_VERIFY_KEY (twinflow keys prints them), else with the key of
// the runtime started last on this machine.
//
// On SIGINT or SIGTERM it stops accepting calls and waits for the running
// ones, so that the runtime sees no call fail during a clean shutdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
	"github.com/twinflow/twinflow/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.Error("datacenter-functions failed", "err", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("datacenter-functions", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8000", "address to serve the function endpoint on")
	drain := fs.Duration("shutdown-timeout", 30*time.Second, "how long to wait for running calls on shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg, err := datacenter.ConfigFromEnv()
	if err != nil {
		return err
	}
	reg := sdk.NewRegistry()
	if err := datacenter.Register(reg, cfg); err != nil {
		return err
	}

	verify, err := sdk.VerifyFromEnv()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := sdk.NewServer(*listen, sdk.Handler(reg, verify))
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving the data-center twins", "url", "http://"+ln.Addr().String(),
		"functions", []string{datacenter.ServerFunction, datacenter.RackFunction, datacenter.DataCenterFunction},
		"datacenter", cfg.DataCenterID, "silenceTimeout", cfg.SilenceTimeout,
		"windowSpacing", cfg.WindowSpacing, "correlationDelay", cfg.CorrelationDelay)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: waiting for running calls", "timeout", *drain)
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
