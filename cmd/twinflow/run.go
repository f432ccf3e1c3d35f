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
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"

	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// runFlags are the flags of twinflow run, once parsed by the flag set
// newRunFlags returns with them.
type runFlags struct {
	configPath      *string
	dataDir         *string
	natsURL         *string
	clusterName     *string
	clusterReplicas *int
	clusterTTL      *time.Duration
	natsCreds       *string
	natsToken       *string
	natsCA          *string
	natsCert        *string
	natsKey         *string
	natsHost        *string
	natsPort        *int
	natsTLSCert     *string
	natsTLSKey      *string
	natsSync        *time.Duration
	admin           *string
	adminTLSCert    *string
	adminTLSKey     *string
	adminClientCA   *string
	adminInsecure   *bool
	ingress         *string
	ingressTLSCert  *string
	ingressTLSKey   *string
	ingressClientCA *string
	ingressInsecure *bool
	metricsAuth     *string
	savepointDir    *string
	shards          *int
	keyGroups       *int
	interval        *time.Duration
	memory          *string
	restore         *string
	stopTimeout     *time.Duration
	dedupWindow     *time.Duration
	spillBudget     *string
	logLevel        *string
	mqtt            *mqttFlags
	pages           consolePages
}

// newRunFlags defines the flags of twinflow run. The deployment manifests
// are checked against it (deploy_test.go).
func newRunFlags() (*flag.FlagSet, *runFlags) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f := &runFlags{}
	f.configPath = fs.String("config", "", "module spec (YAML): endpoints, ingresses, egresses")
	f.dataDir = fs.String("data", "data", "data directory (state and embedded NATS)")
	f.natsURL = fs.String("nats", "", "external NATS server URL (several of one NATS cluster separated by commas); empty starts an embedded server")
	f.clusterName = fs.String("cluster", "", "join the cluster of this name as a worker (needs -nats): workers share the key groups, see README")
	f.clusterReplicas = fs.Int("cluster-replicas", 3, "with -cluster: replicas of the cluster's streams, bucket and object store")
	f.clusterTTL = fs.Duration("cluster-member-ttl", 4*time.Second, "with -cluster: how long a worker's heartbeats may be missing before others take its key groups")
	f.natsCreds = fs.String("nats-creds", "", "external NATS: credentials, a .creds file or an nkey seed file")
	f.natsToken = fs.String("nats-token", "", "external NATS: token")
	f.natsCA = fs.String("nats-ca", "", "external NATS: CA file (PEM) that verifies the server")
	f.natsCert = fs.String("nats-cert", "", "external NATS: client certificate (PEM) for mutual TLS")
	f.natsKey = fs.String("nats-key", "", "external NATS: key of the client certificate")
	f.natsHost = fs.String("nats-host", "127.0.0.1", "embedded NATS listen address; beyond loopback it needs -nats-tls-cert")
	f.natsPort = fs.Int("nats-port", 0, "embedded NATS port (0: 4222, or a free port if taken; -1: a free port; any other must be free)")
	f.natsTLSCert = fs.String("nats-tls-cert", "", "embedded NATS: serve TLS only, with this certificate (PEM)")
	f.natsTLSKey = fs.String("nats-tls-key", "", "embedded NATS: key of the TLS certificate")
	f.natsSync = fs.Duration("nats-sync", 0, "embedded NATS fsync interval (0: fsync every write)")
	f.admin = fs.String("admin", "", "admin API, /metrics and probes listen address (default 127.0.0.1:8090, or a free port if taken)")
	f.adminTLSCert = fs.String("admin-tls-cert", "", "serve the admin API over HTTPS with this certificate (PEM)")
	f.adminTLSKey = fs.String("admin-tls-key", "", "key of the admin API's certificate")
	f.adminClientCA = fs.String("admin-client-ca", "", "with TLS: client certificates of this CA (PEM) authenticate admin calls, as the token does")
	f.adminInsecure = fs.Bool("admin-insecure", false, "serve the admin API over plain HTTP even beyond loopback (its token then crosses the network in clear)")
	f.ingress = fs.String("ingress", "", "HTTP/Connect front door listen address (default 127.0.0.1:8080, or a free port if taken; off: none)")
	f.ingressTLSCert = fs.String("ingress-tls-cert", "", "serve the front door over HTTPS with this certificate (PEM)")
	f.ingressTLSKey = fs.String("ingress-tls-key", "", "key of the front door's certificate")
	f.ingressClientCA = fs.String("ingress-client-ca", "", "with TLS: client certificates of this CA (PEM) authenticate front door calls, as the token does")
	f.ingressInsecure = fs.Bool("ingress-insecure", false, "serve the front door over plain HTTP even beyond loopback (its token then crosses the network in clear)")
	f.metricsAuth = fs.String("metrics-auth", "auto", "whether /metrics needs the admin token: auto (not on loopback, else yes), token or none")
	f.savepointDir = fs.String("savepoint-dir", "", "the only directory the admin API writes savepoints under (default DATA/savepoints)")
	f.shards = fs.Int("shards", 0, "shard loops (default: number of cores)")
	f.keyGroups = fs.Int("key-groups", 0, "key groups K, fixed when the data dir is created (default 128)")
	f.interval = fs.Duration("checkpoint-interval", time.Second, "time between checkpoints")
	f.memory = fs.String("memory", "1GiB", "total memory budget (e.g. 512MiB, 2GiB; units are powers of 1024)")
	f.restore = fs.String("restore", "", "start from this savepoint (the data dir must have no state yet)")
	f.stopTimeout = fs.Duration("stop-timeout", 30*time.Second, "on stop, how long queued work may take to finish before the final checkpoint (and how long that may take)")
	f.dedupWindow = fs.Duration("dedup-window", 10*time.Minute, "how long a publish repeated with the same Nats-Msg-Id is dropped, across restarts")
	f.spillBudget = fs.String("spill-budget", "16GiB", "disk for address backlogs moved out of memory; intake pauses when it is used up")
	f.logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	f.mqtt = addMQTTFlags(fs)
	fs.Var(&f.pages, "console-page", "NAME=DIR: serve the pages in DIR (index.html first) in the web console under /ui/apps/NAME/; repeatable")
	return fs, f
}

func runCmd(ctx context.Context, args []string) error {
	fs, f := newRunFlags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1:
		return usageError("run", "run: unexpected arguments %q; the module spec is one file (-config module.yaml, or module.yaml alone)", pos)
	case len(pos) == 1 && *f.configPath != "":
		return usageError("run", "run: two module specs, -config %s and %s; give one", *f.configPath, pos[0])
	case len(pos) == 1:
		*f.configPath = pos[0]
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	total, err := parseBytes(*f.memory)
	if err != nil {
		return fmt.Errorf("-memory: %w", err)
	}
	spill, err := parseBytes(*f.spillBudget)
	if err != nil {
		return fmt.Errorf("-spill-budget: %w", err)
	}
	metrics, err := runtime.ParseMetricsAuth(*f.metricsAuth)
	if err != nil {
		return fmt.Errorf("-metrics-auth: %w", err)
	}
	module := &spec.Module{}
	if *f.configPath != "" {
		if module, err = spec.Load(*f.configPath); err != nil {
			return err
		}
	}
	f.mqtt.apply(module)
	if *f.restore != "" {
		if err := restoreSavepoint(*f.restore, filepath.Join(*f.dataDir, "state")); err != nil {
			return err
		}
		log.Info("restored savepoint", "from", *f.restore, "data", *f.dataDir)
	}
	cfg := runtime.Config{
		DataDir: *f.dataDir, Module: module, NATSURL: *f.natsURL, NATSCredsFile: *f.natsCreds, NATSToken: *f.natsToken,
		NATSCAFile: *f.natsCA, NATSCertFile: *f.natsCert, NATSKeyFile: *f.natsKey, NATSHost: *f.natsHost, NATSPort: *f.natsPort,
		NATSTLSCertFile: *f.natsTLSCert, NATSTLSKeyFile: *f.natsTLSKey, NATSSyncInterval: *f.natsSync,
		AdminAddr: *f.admin, AdminTLSCertFile: *f.adminTLSCert, AdminTLSKeyFile: *f.adminTLSKey, AdminClientCAFile: *f.adminClientCA,
		AdminInsecure: *f.adminInsecure, MetricsAuth: metrics, SavepointDir: *f.savepointDir,
		IngressAddr: *f.ingress, IngressTLSCertFile: *f.ingressTLSCert, IngressTLSKeyFile: *f.ingressTLSKey, IngressClientCAFile: *f.ingressClientCA,
		IngressInsecure: *f.ingressInsecure,
		Shards:          *f.shards, KeyGroups: *f.keyGroups, CheckpointInterval: *f.interval, Memory: runtime.Memory{Total: total}, Logger: log,
		StopTimeout: *f.stopTimeout, DedupWindow: *f.dedupWindow, MaxSpillBytes: spill, ConsolePages: f.pages.fs(),
	}
	if *f.clusterName != "" {
		cfg.Cluster, cfg.ClusterReplicas, cfg.ClusterMemberTTL = *f.clusterName, *f.clusterReplicas, *f.clusterTTL
	}
	e, err := runtime.Start(ctx, cfg)
	if errors.Is(err, natsbus.ErrMQTTPortInUse) {
		return fmt.Errorf("%w: the MQTT gateway's port is taken (an MQTT broker, or another twinflow run?); choose another with -mqtt-port (or mqtt.port in the module spec)", err)
	}
	if errors.Is(err, natsbus.ErrPortInUse) {
		return fmt.Errorf("%w: -nats-port %d is taken (another twinflow run, or a NATS server?); choose another port, "+
			"or leave -nats-port out to take 4222 or else a free port", err, *f.natsPort)
	}
	if err != nil {
		return err
	}
	// The Go heap gets what Pebble's parts of the budget leave.
	debug.SetMemoryLimit(e.Budget().GoMemoryLimit())
	info := e.Access()
	info.PID, info.Started = os.Getpid(), time.Now().UTC().Truncate(time.Second)
	if err := runinfo.Write(info); err != nil {
		e.Kill()
		return err
	}
	// A clean stop leaves no runtime file behind; one a crash leaves names
	// a process that has gone, which clients notice.
	defer runinfo.Remove(info.DataDir)
	printRunning(os.Stderr, info, e.Budget(), *f.configPath, module)
	select {
	case <-ctx.Done():
	case <-e.Done():
		// Stopped by itself: it could not continue (a disk it cannot write).
		return e.Err()
	}
	// A second signal ends the process at once: the last complete
	// checkpoint is where the next start resumes.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	log.Info("signal received; stopping cleanly (a second signal stops at once)", "deadline", 2**f.stopTimeout)
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

// printRunning says where the runtime is, what it runs and which
// credentials reach it; its last line says that it is ready.
func printRunning(w io.Writer, info runinfo.Info, budget runtime.Budget, config string, module *spec.Module) {
	fmt.Fprintf(w, "twinflow running\n")
	if config == "" {
		fmt.Fprintf(w, "  module:       none (-config module.yaml names the function endpoints, ingresses and egresses)\n")
	} else {
		fmt.Fprintf(w, "  module:       %s: %d endpoints, %d ingresses, %d egresses\n", config, len(module.Endpoints), len(module.Ingresses), len(module.Egresses))
	}
	fmt.Fprintf(w, "  nats:         %s\n", info.NATSURL)
	if info.NATSCreds != "" {
		fmt.Fprintf(w, "                client credentials %s, inbox prefix %s\n", info.NATSCreds, info.NATSInboxPrefix)
	}
	printMQTT(w, info, module)
	fmt.Fprintf(w, "  admin:        %s (token in %s)\n  metrics:      %s/metrics\n", info.AdminURL, info.AdminTokenFile, info.AdminURL)
	fmt.Fprintf(w, "  console:      %s/ui/ (twinflow console prints a link that logs in)\n", info.AdminURL)
	if info.IngressURL != "" {
		fmt.Fprintf(w, "  ingress:      %s (POST /send/TYPE/ID, /call/TYPE/ID; token in %s)\n", info.IngressURL, info.IngressTokenFile)
	}
	fmt.Fprintf(w, "  signing key:  %s (endpoints: TWINFLOW_VERIFY_KEY=%s)\n", filepath.Join(info.DataDir, secrets.SigningPublicFile), strings.Join(info.SigningKeys, ","))
	fmt.Fprintf(w, "  runtime file: %s (client commands find the runtime through it)\n", filepath.Join(info.DataDir, runinfo.FileName))
	fmt.Fprintf(w, "  memory:       %s\n", budget)
	fmt.Fprintf(w, "twinflow ready: clients may connect (pid %d)\n", info.PID)
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
