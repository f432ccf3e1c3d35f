// Command run-example runs the data-center digital twin (examples/datacenter)
// on one machine, as make run does: the function endpoint, a Twinflow
// worker with an embedded NATS server and a data dir of its own, and the
// simulator of a small data center with a few injected faults; then it
// prints the alerts as they happen.
//
// It starts each process once the one before it serves (polling its port or
// /healthz, with a deadline), and runs each in a process group of its own,
// so that Ctrl-C or SIGTERM, even with its output on a pipe, reach only the
// launcher, which then stops them in the reverse order: the alerts and the
// simulator, the worker with SIGTERM (it takes a final checkpoint, which
// still needs the endpoint), then the endpoint. It waits for each, removes
// the temporary data dir and exits 0. A second Ctrl-C kills them all at
// once. If a process dies on its own, it stops the others and exits 1,
// naming it and showing the end of its log. It never stops a process it did
// not start: when a port it needs is taken, it says by what and exits.
//
// Settings are flags, each defaulting to an environment variable:
//
//	-data DIR        DATA       data directory, kept (default: a new temporary one, removed at exit)
//	-nats-port N     NATS_PORT  port of the embedded NATS server (4222)
//	-admin ADDR      ADMIN      admin API listen address (127.0.0.1:8090)
//	-ingress ADDR    INGRESS    the HTTP/Connect front door's listen address (127.0.0.1:8080)
//	-memory SIZE     MEMORY     the worker's memory budget (256MiB: the example's size; see below)
//	-racks N         RACKS      racks of the simulated data center (4)
//	-servers N       SERVERS    servers per rack (8)
//	-interval D      INTERVAL   time between two reports of a server (1s)
//	-faults LIST     FAULTS     fault schedule, kind:target@time,... (see examples/datacenter/sim)
//	-alerts HOW      ALERTS     "decoded" (simulator -watch, one line each) or "tail" (twinflow tail)
//	-mqtt            MQTT       the servers are MQTT devices (deploy/datacenter/module-mqtt.yaml)
//	-mqtt-port N     MQTT_PORT  port of the MQTT gateway (1883)
//	-console-page DIR           the example's page for the web console (examples/datacenter/console)
//
// The function endpoint listens where the module spec
// (deploy/datacenter/module.yaml) says it is.
//
// The memory budget also sizes the disk the worker's store takes: Pebble's
// write-ahead logs hold up to about five memtables of 5% of the budget
// each, filled by the state the twins rewrite every second. The example's
// 256MiB keeps them near 60 MB; twinflow run's default, 1GiB, would let
// them reach 250 MB after a few minutes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twinflow/twinflow/runtime/spec"
)

// defaultFaults: the switch of rack-2 fails at 10s, the disk of server 3 of
// rack-1 at 15s, server 5 of rack-0 dies at 20s (NO_REPORTS 30s later). The
// disk is replaced at 30s (its alert resolves two minutes after the last
// error), the switch at 60s, and the dead server comes back at 90s.
const defaultFaults = "tor:rack-2@10s,disk:rack-1/srv-3@15s,dead:rack-0/srv-5@20s,clear:rack-1/srv-3@30s,clear:rack-2@60s,clear:rack-0/srv-5@90s"

type config struct {
	bin, module, data string
	natsPort          int
	admin, memory     string
	ingress           string // the HTTP/Connect front door's address
	racks, servers    int
	interval          time.Duration
	faults, alerts    string
	readyTimeout      time.Duration
	rackfun           string // "go", or "ts": the rack twin in TypeScript
	mqtt              bool   // the simulated servers publish over MQTT
	mqttPort          int
	consolePage       string // the example's page for the web console; "" for none
	endpoint          string // from the module spec
	rackEndpoint      string // of datacenter/rack, when another endpoint serves it
}

// tsRack is the TypeScript rack twin, built by make ts, and the module spec
// that routes datacenter/rack to it.
const (
	tsRack       = "examples/datacenter/ts/dist/src/main.js"
	tsRackModule = "deploy/datacenter/module-ts-rack.yaml"
)

// mqttModule is the module spec of the example fed by MQTT devices.
const mqttModule = "deploy/datacenter/module-mqtt.yaml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the flags that take their default from an environment
// variable, so that make run takes them too: make run RACKS=8.
var settings = map[string]string{
	"data": "DATA", "nats-port": "NATS_PORT", "admin": "ADMIN", "ingress": "INGRESS", "memory": "MEMORY", "racks": "RACKS",
	"servers": "SERVERS", "interval": "INTERVAL", "faults": "FAULTS", "alerts": "ALERTS", "rackfun": "RACKFUN",
	"mqtt": "MQTT", "mqtt-port": "MQTT_PORT",
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	exe, _ := os.Executable()
	fs := flag.NewFlagSet("run-example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.bin, "bin", filepath.Dir(exe), "directory of the twinflow, datacenter-functions and simulator binaries")
	fs.StringVar(&c.module, "module", "deploy/datacenter/module.yaml", "module spec of the example")
	fs.StringVar(&c.data, "data", "", "data directory, kept at exit (default: a new temporary one, removed at exit) ($DATA)")
	fs.IntVar(&c.natsPort, "nats-port", 4222, "port of the embedded NATS server ($NATS_PORT)")
	fs.StringVar(&c.admin, "admin", "127.0.0.1:8090", "admin API listen address ($ADMIN)")
	fs.StringVar(&c.ingress, "ingress", "127.0.0.1:8080", "the HTTP/Connect front door's listen address ($INGRESS)")
	fs.StringVar(&c.memory, "memory", "256MiB", "the worker's memory budget, which also bounds the disk its write-ahead logs take ($MEMORY)")
	fs.IntVar(&c.racks, "racks", 4, "racks of the simulated data center ($RACKS)")
	fs.IntVar(&c.servers, "servers", 8, "servers per rack ($SERVERS)")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between two reports of a server ($INTERVAL)")
	fs.StringVar(&c.faults, "faults", defaultFaults, "fault schedule, kind:target@time,... ($FAULTS)")
	fs.StringVar(&c.alerts, "alerts", "decoded", `how to print the alerts: "decoded" (simulator -watch) or "tail" (twinflow tail) ($ALERTS)`)
	fs.DurationVar(&c.readyTimeout, "ready-timeout", time.Minute, "how long to wait for each process to serve")
	fs.StringVar(&c.rackfun, "rackfun", "go", `which rack twin serves datacenter/rack: "go", or "ts", the TypeScript one in `+tsRack+`, built by make ts ($RACKFUN)`)
	fs.BoolVar(&c.mqtt, "mqtt", false, "the simulated servers are MQTT devices that publish through the runtime's MQTT gateway, with the module spec "+mqttModule+" ($MQTT)")
	fs.IntVar(&c.mqttPort, "mqtt-port", 1883, "with -mqtt: port of the MQTT gateway ($MQTT_PORT)")
	fs.StringVar(&c.consolePage, "console-page", "examples/datacenter/console", "directory of the example's page for the web console; empty for none")
	for name, env := range settings {
		if v := os.Getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return c, fmt.Errorf("%s=%s: %v", env, v, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.alerts != "decoded" && c.alerts != "tail" {
		return c, fmt.Errorf("-alerts (ALERTS) is %q; want decoded or tail", c.alerts)
	}
	moduleSet := false
	fs.Visit(func(f *flag.Flag) { moduleSet = moduleSet || f.Name == "module" })
	switch c.rackfun {
	case "go":
		if c.mqtt && !moduleSet {
			c.module = mqttModule
		}
	case "ts":
		if c.mqtt {
			return c, errors.New("-rackfun ts (RACKFUN=ts) and -mqtt (MQTT=1) cannot be combined: each has a module spec of its own")
		}
		if _, err := os.Stat(tsRack); err != nil {
			return c, fmt.Errorf("-rackfun ts: %s is missing: run make ts, or make run RACKFUN=ts", tsRack)
		}
		c.module = tsRackModule
	default:
		return c, fmt.Errorf("-rackfun (RACKFUN) is %q; want go or ts", c.rackfun)
	}
	if c.consolePage != "" {
		if _, err := os.Stat(filepath.Join(c.consolePage, "index.html")); err != nil {
			return c, fmt.Errorf("-console-page %s: %w (run make run from the repository's top, or give -console-page '' to run without the page)", c.consolePage, err)
		}
	}
	m, err := spec.Load(c.module)
	if err != nil {
		return c, err
	}
	ep, ok := m.EndpointFor("datacenter/server")
	if !ok {
		return c, fmt.Errorf("%s has no endpoint for datacenter/*", c.module)
	}
	if c.endpoint, err = hostPort(c.module, ep.URL); err != nil {
		return c, err
	}
	if rack, ok := m.EndpointFor("datacenter/rack"); ok && rack.URL != ep.URL {
		if c.rackEndpoint, err = hostPort(c.module, rack.URL); err != nil {
			return c, err
		}
	}
	return c, nil
}

// hostPort returns the host:port of an endpoint URL of the module spec.
func hostPort(module, url string) (string, error) {
	hp := strings.TrimPrefix(url, "http://")
	if _, _, err := net.SplitHostPort(hp); err != nil {
		return "", fmt.Errorf("%s: the endpoint URL %s is not http://host:port", module, url)
	}
	return hp, nil
}

// processes is the example, in the order it starts; it stops in the
// reverse order. Function endpoints come first, as the worker calls them;
// an endpoint serving some of the example's functions in another language
// goes there too, with its function types in the module spec.
func processes(c config) []process {
	alerts := process{name: "the alert watcher", bin: "simulator", args: []string{"-watch"}}
	if c.alerts == "tail" {
		alerts = process{name: "the alert tail", bin: "twinflow", args: []string{"tail", "datacenter.alerts"}}
	}
	alerts.log, alerts.stdout, alerts.stopWithin = "alerts.log", true, 10*time.Second
	simulatorNews := regexp.MustCompile(`fault injected|level=(WARN|ERROR)`)
	ps := []process{{
		name: "the function endpoint", bin: "datacenter-functions", args: []string{"-listen", c.endpoint},
		log: "functions.log", ready: listening(c.endpoint), waitsFor: "to listen on " + c.endpoint,
		stopWithin: 40 * time.Second, // it lets running calls finish, for 30s at most
	}}
	if c.rackfun == "ts" {
		ps = append(ps, process{
			name: "the TypeScript rack endpoint", bin: "node", onPath: true, args: []string{tsRack, "--listen", c.rackEndpoint},
			log: "rack-ts.log", ready: listening(c.rackEndpoint), waitsFor: "to listen on " + c.rackEndpoint,
			stopWithin: 10 * time.Second,
		})
	}
	runArgs := []string{"run", "-config", c.module, "-data", filepath.Join(c.data, "twinflow"),
		"-nats-port", strconv.Itoa(c.natsPort), "-admin", c.admin, "-ingress", c.ingress, "-memory", c.memory}
	runArgs = append(runArgs, c.mqttArgs("-mqtt-port", strconv.Itoa(c.mqttPort))...)
	if c.consolePage != "" {
		runArgs = append(runArgs, "-console-page", "datacenter="+c.consolePage)
	}
	return append(ps, []process{
		{
			name: "twinflow run", bin: "twinflow",
			args: runArgs,
			log:  "twinflow.log", ready: healthy("http://" + c.admin + "/healthz"),
			waitsFor:   "to answer on http://" + c.admin + "/healthz",
			stopWithin: 90 * time.Second, // its final checkpoint may take up to a minute
		},
		{
			name: "the simulator", bin: "simulator",
			args: append([]string{"-racks", strconv.Itoa(c.racks), "-servers", strconv.Itoa(c.servers),
				"-interval", c.interval.String(), "-fault", c.faults},
				c.mqttArgs("-mqtt", c.mqttURL(), "-mqtt-password-file", filepath.Join(c.data, "twinflow", "secrets", "mqtt", "device.password"))...),
			// Its fault injections and problems show next to the alerts
			// they cause.
			log: "simulator.log", show: simulatorNews.MatchString, stopWithin: 10 * time.Second,
		},
		alerts,
	}...)
}

// mqttArgs returns args with -mqtt, none without.
func (c config) mqttArgs(args ...string) []string {
	if !c.mqtt {
		return nil
	}
	return args
}

func (c config) mqttURL() string { return "mqtt://127.0.0.1:" + strconv.Itoa(c.mqttPort) }

// ports are the addresses the example listens on, each with what to do
// when it is taken.
func ports(c config) []port {
	admin := "http://" + c.admin
	ps := []port{
		{c.endpoint, "the function endpoint", "is another make run running? Stop it with Ctrl-C in its terminal; the endpoint's address is the URL in " + c.module},
		{net.JoinHostPort("127.0.0.1", strconv.Itoa(c.natsPort)), "the embedded NATS server", "is another twinflow or NATS server running? Stop it (bin/twinflow stop --admin URL stops a twinflow), or choose another port with NATS_PORT=4223"},
		{c.admin, "the twinflow admin API", "is another twinflow running? Stop it with bin/twinflow stop --admin " + admin + ", or choose another address with ADMIN=127.0.0.1:8091"},
		{c.ingress, "the twinflow front door", "is another twinflow running? Stop it with bin/twinflow stop --admin " + admin + ", or choose another address with INGRESS=127.0.0.1:8081"},
	}
	if c.mqtt {
		ps = append(ps, port{net.JoinHostPort("127.0.0.1", strconv.Itoa(c.mqttPort)), "the MQTT gateway", "is an MQTT broker or another twinflow running? Stop it, or choose another port with MQTT_PORT=1884"})
	}
	if c.rackEndpoint != "" {
		ps = append(ps, port{c.rackEndpoint, "the rack endpoint", "is another make run running? Stop it with Ctrl-C in its terminal; the address is the datacenter/rack URL in " + c.module})
	}
	return ps
}

func run(args []string, stdout, stderr io.Writer) int {
	out, errOut := &terminal{w: stdout}, &terminal{w: stderr}
	fail := func(err error) int {
		errOut.printf("run-example: %v\n", err)
		return 1
	}
	c, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return fail(err)
	}
	for _, b := range []string{"twinflow", "datacenter-functions", "simulator"} {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			return fail(fmt.Errorf("%s is missing: run make run, or make build", filepath.Join(c.bin, b)))
		}
	}
	if err := checkFree(ports(c)); err != nil {
		return fail(err)
	}

	// The first Ctrl-C or SIGTERM stops cleanly, the second kills. Closed
	// pipes are not fatal: with the output on `| tee`, tee dies on Ctrl-C
	// too, and the launcher must still stop everything.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, interrupted := context.WithCancel(context.Background())
	kill := make(chan struct{})
	go func() {
		<-signals
		interrupted()
		<-signals
		out.printf("\nsecond interrupt: killing everything\n")
		close(kill)
	}()

	keep := c.data != ""
	if keep {
		err = os.MkdirAll(c.data, 0o755)
	} else {
		c.data, err = os.MkdirTemp("", "twinflow-example.")
	}
	if err != nil {
		return fail(err)
	}
	logs := filepath.Join(c.data, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return fail(err)
	}
	out.printf("data directory: %s\n", c.data)

	// The runtime's key pair is made first, so that the endpoints serve
	// only the calls the runtime signs with it; the client commands and the
	// simulator find the runtime, its client credentials and its admin
	// token through its data dir.
	twinData := filepath.Join(c.data, "twinflow")
	key, err := exec.Command(filepath.Join(c.bin, "twinflow"), "keys", "--data", twinData).Output()
	if err != nil {
		return fail(fmt.Errorf("making the runtime's keys: twinflow keys --data %s: %w", twinData, err))
	}
	env := []string{
		"TWINFLOW_NATS=nats://127.0.0.1:" + strconv.Itoa(c.natsPort), "TWINFLOW_ADMIN=http://" + c.admin,
		"TWINFLOW_DATA=" + twinData, "TWINFLOW_CREDS=" + filepath.Join(twinData, "secrets", "client.nk"),
		"TWINFLOW_INBOX_PREFIX=_INBOX_client", "TWINFLOW_VERIFY_KEY=" + strings.TrimSpace(string(key)),
	}
	g := newGroup(c.bin, logs, env, out)
	status := supervise(ctx, g, processes(c), c, out, errOut, kill)
	if keep {
		out.printf("data and logs kept in %s\n", c.data)
	} else if err := os.RemoveAll(c.data); err != nil {
		errOut.printf("run-example: removing the data directory: %v\n", err)
		status = 1
	}
	if status == 0 {
		out.printf("stopped\n")
	}
	return status
}

// supervise starts procs one after the other, each once the one before is
// ready, then waits for an interrupt or for a process to exit, and stops
// them all. It returns the exit status of the launcher.
func supervise(ctx context.Context, g *group, procs []process, c config, out, errOut *terminal, kill chan struct{}) int {
	failed := func(err error) int {
		errOut.printf("run-example: %v\n", err)
		for _, err := range g.stop(kill) {
			errOut.printf("run-example: %v\n", err)
		}
		return 1
	}
	for i, p := range procs {
		last := i == len(procs)-1
		if last {
			printBanner(out, c)
		}
		ch, err := g.start(p)
		if err != nil {
			return failed(err)
		}
		out.printf("started %s (pid %d)\n", p.name, ch.cmd.Process.Pid)
		if last {
			out.printf("\nAlerts on datacenter.alerts (Ctrl-C stops everything):\n")
		}
		if err := g.waitReady(ctx, ch, c.readyTimeout); errors.Is(err, context.Canceled) {
			break
		} else if err != nil {
			return failed(err)
		}
	}
	select {
	case <-ctx.Done():
		out.printf("\nstopping (Ctrl-C again kills everything at once)\n")
		errs := g.stop(kill)
		for _, err := range errs {
			errOut.printf("run-example: %v\n", err)
		}
		if len(errs) > 0 {
			return 1
		}
		return 0
	case ch := <-g.exited:
		return failed(ch.failure("exited"))
	}
}

func printBanner(out *terminal, c config) {
	mqttLine := ""
	if c.mqtt {
		mqttLine = "\n  MQTT               " + c.mqttURL() + " (the servers publish their reports here, QoS 1, to dc1/<rack>/<server>/metrics)"
	}
	out.printf(`
The data-center twin is running: %d racks of %d servers, one report each per %s.
%s  function endpoint  http://%s
  twinflow admin     http://%s
  metrics            http://%s/metrics
  NATS               nats://127.0.0.1:%d%s
  front door         http://%s (HTTP/Connect: POST /send/TYPE/ID, /call/TYPE/ID; token in %s)
  logs               %s
  faults             %s

In another terminal (the commands find this runtime: it is the one started last):
  bin/twinflow request datacenter/datacenter dc --typename proto/datacenter.v1.GetUnhealthyRacks --data ''
  bin/twinflow state get datacenter/server srv-2-0
  bin/twinflow state get datacenter/rack rack-2
  bin/twinflow state get datacenter/datacenter dc
  bin/simulator -unhealthy dc           # the same question, the answer decoded
  bin/twinflow tail datacenter.alerts   # the raw alert records
  %s | strings   # the question over HTTP

`, c.racks, c.servers, c.interval, consoleLines(c), c.endpoint, c.admin, c.admin, c.natsPort, mqttLine,
		c.ingress, ingressTokenFile(c), filepath.Join(c.data, "logs"), c.faults, curlCall(c))
}

// ingressTokenFile is the file of the front door's token.
func ingressTokenFile(c config) string {
	return filepath.Join(c.data, "twinflow", "secrets", "ingress.token")
}

// curlCall is a curl command that asks the data center for its unhealthy
// racks through the HTTP front door; the answer is protobuf.
func curlCall(c config) string {
	return fmt.Sprintf(`curl -s -X POST http://%s/call/datacenter/datacenter/dc -H "Authorization: Bearer $(cat %s)" `+
		`-H 'Content-Type: application/protobuf; messageType=datacenter.v1.GetUnhealthyRacks' --data-binary ''`, c.ingress, ingressTokenFile(c))
}

// consoleLines are the banner's lines about the web console: its address,
// and a link that logs the browser in and opens the example's page. The
// token travels in the link's fragment, which the browser sends nowhere.
func consoleLines(c config) string {
	base := "http://" + c.admin + "/ui/"
	page := base
	if c.consolePage != "" {
		page = base + "apps/datacenter/"
	}
	token, err := os.ReadFile(filepath.Join(c.data, "twinflow", "secrets", "admin.token"))
	if err != nil {
		return fmt.Sprintf("  web console        %s (log in with the token in %s)\n", page, filepath.Join(c.data, "twinflow", "secrets", "admin.token"))
	}
	return fmt.Sprintf("  web console        %s\n  open to log in     %slogin?next=%s#token=%s\n",
		page, base, url.QueryEscape(strings.TrimPrefix(page, "http://"+c.admin)), url.QueryEscape(strings.TrimSpace(string(token))))
}

// listening is ready once addr accepts TCP connections.
func listening(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	}
}

// healthy is ready once url answers 200 OK.
func healthy(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return nil
	}
}
