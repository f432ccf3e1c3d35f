// Package bench is the end-to-end benchmark driver behind cmd/twinflow-bench.
//
// It runs the runtime inside the driver's process (runtime.Start: embedded
// NATS, a temporary data dir, checkpoints every second, the default 1 GiB
// memory budget and its GOMEMLIMIT, as twinflow run sets them) and the
// function endpoint in a child process (internal/bench/cmd/benchfn, a keyed
// counter written with the SDK), connected over loopback. Publishers are in
// the driver's process, on their own NATS connection. The runtime is in
// process so that -cpuprofile and -memprofile see it; its memory is still
// its own: the driver resets the process's peak RSS (/proc/self/clear_refs)
// and measures its heap just before starting it, and holds little beside.
// Every scenario runs once per ingress durability mode: the embedded NATS
// server fsyncing every JetStream write ("fsync", the runtime's default),
// and fsyncing every 2 minutes ("default", NATS's own default).
//
// Scenarios:
//
//   - processing: the direct-ingress stream is filled with N messages
//     first, then the runtime starts and the time until every message and
//     every message it caused has been applied is measured. The final
//     counts are checked through the query API against the counts the
//     workload implies (all addresses, or a sample of large address sets).
//   - e2e: publishers (async JetStream publish, as fast as acknowledged)
//     and the runtime together; messages per second from the first publish
//     to the last message applied.
//   - latency: publish → invocation (stamped in the payload by the
//     publisher, read by the function) and publish → egress (stamped, read
//     by a NATS subscriber in the driver), at a fixed offered load of half
//     the e2e rate, over many addresses and for one hot key.
//   - memory: processing runs over 1k, 100k and 1M addresses; the
//     process's peak RSS (VmHWM, reset before the runtime starts) and its
//     Go heap, peak and after the work is done.
//   - w1, w2, w3: the keyed counter over 1,000 keys (workloads.go). w1:
//     64 producers send 200k one-way messages, each waiting for the
//     acknowledgement of one before the next; acknowledged and applied
//     messages per second, acknowledgement latency. w2: 64 closed-loop
//     clients send requests and wait for the replies; requests per second
//     and round-trip latency. w3: the same with one client and one key.
//     Each over every ingress path: direct JetStream publishes, the front
//     door's core NATS requests, its HTTP listener.
//
// Checkpoints (pause, duration, bytes) are collected from every run through
// the admin API's checkpoint list.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode is an ingress durability mode: the embedded NATS server's fsync
// interval.
type Mode struct {
	Name string
	Sync time.Duration // 0: fsync every write
}

var allModes = []Mode{
	{Name: "fsync", Sync: 0},
	{Name: "default", Sync: 2 * time.Minute},
}

// Options configure a benchmark run. Zero values take the defaults of the
// flags.
type Options struct {
	Scenarios []string
	Modes     []Mode

	Messages      int // processing: messages over Addresses
	Addresses     int
	WideMessages  int // processing: messages over WideAddresses
	WideAddresses int

	MemoryAddresses []int // memory: processing runs over these
	MemoryMessages  int   // messages of the memory runs not already run

	Duration        time.Duration // e2e: publishing time
	LatencyDuration time.Duration // latency: measured time, after a warm-up
	LatencyRate     float64       // latency: offered msgs/s; 0: half the e2e rate

	// The workloads w1 (one-way), w2 (request/response, many clients) and
	// w3 (one client, one key), over each of Paths.
	Paths       []string
	Keys        int           // w1, w2: distinct keys
	W1Messages  int           // w1: messages
	W1Producers int           // w1: producers, each waiting for its acknowledgement
	W2Clients   int           // w2: closed-loop clients
	WDuration   time.Duration // w2, w3: measured time, after a warm-up
	DoorWrites  int           // the front door's writes in flight; 0: its default
	DoorLinger  time.Duration // the front door's linger; 0: its default, negative: none

	SendFraction   float64
	EgressFraction float64
	PayloadSize    int
	Shards         int
	Checkpoints    time.Duration // checkpoint interval
	Seed           uint64

	FnPath     string // benchfn binary; empty: next to this binary, else go build
	JSONPath   string
	CPUProfile string
	MemProfile string
	Verbose    bool
}

var allScenarios = []string{"processing", "e2e", "latency", "memory", "w1", "w2", "w3"}

// Main runs the driver with command-line args and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "twinflow-bench:", err)
		return 2
	}
	if err := Run(ctx, opts, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "twinflow-bench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Options, error) {
	fs := flag.NewFlagSet("twinflow-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: twinflow-bench [flags]\n\n"+
			"Runs the Twinflow runtime in this process and a counter function endpoint in a\n"+
			"child process, and measures processing and end-to-end throughput, latency,\n"+
			"checkpoints and memory, in both ingress durability modes.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var o Options
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run: "+strings.Join(allScenarios, ", "))
	modes := fs.String("modes", "fsync,default", "ingress durability modes: fsync (NATS fsyncs every write), default (every 2 minutes)")
	fs.IntVar(&o.Messages, "messages", 1_000_000, "processing: messages pre-filled over -addresses")
	fs.IntVar(&o.Addresses, "addresses", 10_000, "processing, e2e, latency: distinct addresses")
	fs.IntVar(&o.WideMessages, "wide-messages", 1_000_000, "processing: messages pre-filled over -wide-addresses (0 skips)")
	fs.IntVar(&o.WideAddresses, "wide-addresses", 1_000_000, "processing: distinct addresses of the wide run")
	memAddrs := fs.String("memory-addresses", "1000,100000,1000000", "memory: address counts")
	fs.IntVar(&o.MemoryMessages, "memory-messages", 300_000, "memory: messages per run (at least one per address)")
	fs.DurationVar(&o.Duration, "duration", 15*time.Second, "e2e: how long publishers publish")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", 10*time.Second, "latency: measured time, after a 2s warm-up")
	fs.Float64Var(&o.LatencyRate, "latency-rate", 0, "latency: offered msgs/s (0: half the e2e rate of the mode, or 10000 without e2e)")
	paths := fs.String("paths", strings.Join(allPaths, ","), "w1, w2, w3: ingress paths: direct (JetStream publish per message), nats (the front door's core NATS requests), http (the front door's HTTP listener), client (package client: a process's concurrent sends in shared batch writes)")
	fs.IntVar(&o.Keys, "keys", 1000, "w1, w2: distinct keys")
	fs.IntVar(&o.W1Messages, "w1-messages", 200_000, "w1: messages")
	fs.IntVar(&o.W1Producers, "w1-producers", 64, "w1: producers, each sending its next message once the last is acknowledged")
	fs.IntVar(&o.W2Clients, "w2-clients", 64, "w2: closed-loop clients")
	fs.DurationVar(&o.WDuration, "w-duration", 10*time.Second, "w2, w3: measured time, after a 2s warm-up")
	fs.IntVar(&o.DoorWrites, "door-writes", 0, "the front door's durable writes in flight (0: its default)")
	fs.DurationVar(&o.DoorLinger, "door-linger", 0, "the longest the front door's next write waits for the senders it acknowledged (0: its default, negative: never)")
	fs.Float64Var(&o.SendFraction, "send", 0.1, "fraction of messages the function sends on to another address")
	fs.Float64Var(&o.EgressFraction, "egress", 0.01, "fraction of messages the function writes to the exactly-once egress")
	fs.IntVar(&o.PayloadSize, "payload", 100, "message payload size in bytes")
	fs.IntVar(&o.Shards, "shards", 0, "runtime shards (0: number of cores)")
	fs.DurationVar(&o.Checkpoints, "checkpoint-interval", time.Second, "runtime checkpoint interval")
	seed := fs.Uint64("seed", 1, "workload seed")
	fs.StringVar(&o.FnPath, "fn", "", "benchfn binary (default: next to this binary, else built with go build)")
	fs.StringVar(&o.JSONPath, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write CPU profiles of each run's measured phase: this process (runtime, NATS server, publishers) to FILE-RUN, the function endpoint to FILE-fn-RUN")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile of this process after each run's work to FILE-RUN")
	fs.BoolVar(&o.Verbose, "v", false, "log the runtime's info messages and the driver's progress")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Seed = *seed
	for _, s := range splitList(*scenarios) {
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("-scenarios: unknown scenario %q", s)
		}
		o.Scenarios = append(o.Scenarios, s)
	}
	for _, name := range splitList(*modes) {
		i := slices.IndexFunc(allModes, func(m Mode) bool { return m.Name == name })
		if i < 0 {
			return o, fmt.Errorf("-modes: unknown mode %q (want fsync or default)", name)
		}
		o.Modes = append(o.Modes, allModes[i])
	}
	for _, p := range splitList(*paths) {
		if !slices.Contains(allPaths, p) {
			return o, fmt.Errorf("-paths: unknown path %q (want direct, nats or http)", p)
		}
		o.Paths = append(o.Paths, p)
	}
	for _, s := range splitList(*memAddrs) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return o, fmt.Errorf("-memory-addresses: bad count %q", s)
		}
		o.MemoryAddresses = append(o.MemoryAddresses, n)
	}
	switch {
	case o.PayloadSize < 64 || o.PayloadSize > 1<<20:
		return o, fmt.Errorf("-payload must be within [64, 1MiB], got %d", o.PayloadSize)
	case o.Messages < 1 || o.Addresses < 1 || o.WideMessages < 0 || o.WideAddresses < 1 || o.MemoryMessages < 1:
		return o, errors.New("message and address counts must be positive")
	case o.Keys < 1 || o.W1Messages < 1 || o.W1Producers < 1 || o.W2Clients < 1 || o.WDuration <= 0:
		return o, errors.New("-keys, -w1-messages, -w1-producers, -w2-clients and -w-duration must be positive")
	case o.SendFraction < 0 || o.SendFraction > 1 || o.EgressFraction < 0 || o.EgressFraction > 1:
		return o, errors.New("-send and -egress are fractions within [0, 1]")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o *Options) has(scenario string) bool { return slices.Contains(o.Scenarios, scenario) }

// Run runs the selected scenarios and prints the tables to out.
func Run(ctx context.Context, o Options, out, stderr io.Writer) error {
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	d := &driver{
		o:      o,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		stderr: stderr,
	}
	fn, err := startFunction(ctx, o.FnPath, stderr)
	if err != nil {
		return err
	}
	defer fn.close()
	d.fn = fn
	report := &Report{Machine: machineInfo(), Started: time.Now().UTC(), Options: o}
	for _, mode := range o.Modes {
		if err := d.runMode(ctx, mode, report); err != nil {
			return err
		}
	}
	report.Finished = time.Now().UTC()
	report.print(out)
	if o.JSONPath != "" {
		if err := report.writeJSON(o.JSONPath); err != nil {
			return err
		}
	}
	return report.failures()
}

type driver struct {
	o      Options
	log    *slog.Logger
	stderr io.Writer
	fn     *function
}

// profile starts a CPU profile of a run's measured phase when -cpuprofile
// is set, into FILE-NAME, and returns the function that stops it.
func (d *driver) profile(name string) func() {
	if d.o.CPUProfile == "" {
		return func() {}
	}
	path := d.o.CPUProfile + "-" + name
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		d.log.Error("CPU profile", "err", err)
		return func() {}
	}
	fnPath, err := filepath.Abs(d.o.CPUProfile + "-fn-" + name)
	if err == nil {
		err = d.fn.profile(http.MethodPost, fnPath)
	}
	if err != nil {
		d.log.Error("CPU profile of the function endpoint", "err", err)
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		if err := d.fn.profile(http.MethodDelete, ""); err != nil {
			d.log.Error("CPU profile of the function endpoint", "err", err)
		}
		d.progress("CPU profiles written to %s and %s", path, fnPath)
	})
}

func (d *driver) progress(format string, args ...any) {
	fmt.Fprintf(d.stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (d *driver) runMode(ctx context.Context, mode Mode, r *Report) error {
	o := d.o
	add := func(res Result) {
		r.Results = append(r.Results, res)
		if res.Error != "" {
			d.progress("%s/%s: FAILED: %s", res.Scenario, mode.Name, res.Error)
		}
	}
	done := map[int]bool{} // address counts with a processing run
	if o.has("processing") {
		add(d.processing(ctx, mode, "processing", o.Addresses, o.Messages))
		done[o.Addresses] = true
		if o.WideMessages > 0 {
			add(d.processing(ctx, mode, "processing", o.WideAddresses, o.WideMessages))
			done[o.WideAddresses] = true
		}
	}
	if o.has("memory") {
		for _, a := range o.MemoryAddresses {
			if !done[a] {
				add(d.processing(ctx, mode, "memory", a, max(o.MemoryMessages, a)))
			}
		}
	}
	rate := o.LatencyRate
	if o.has("e2e") {
		res := d.endToEnd(ctx, mode)
		add(res)
		if rate == 0 && res.Error == "" {
			rate = res.MsgsPerSec / 2
		}
	}
	if rate == 0 {
		rate = 10_000
	}
	if o.has("latency") {
		add(d.latency(ctx, mode, "latency", o.Addresses, rate))
		add(d.latency(ctx, mode, "latency-hot", 1, rate))
	}
	for _, path := range o.Paths {
		if o.has("w1") {
			add(d.oneWay(ctx, mode, path))
		}
		if o.has("w2") {
			add(d.requestResponse(ctx, mode, path, "w2", o.W2Clients, o.Keys))
		}
		if o.has("w3") {
			add(d.requestResponse(ctx, mode, path, "w3", 1, 1))
		}
	}
	return ctx.Err()
}
