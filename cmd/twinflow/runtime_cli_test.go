package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twinflow/twinflow/internal/testwait"
)

// TestStateGetWithoutState: state get says when there is nothing to print,
// with exit status 3, and why: the address has no state, the state named
// is not set or does not exist (and which do), the function type is
// unknown.
func TestStateGetWithoutState(t *testing.T) {
	c := startCLI(t)
	c.run("send", "cli/counter", "a", "--json", `{"add": 1}`)
	testwait.For(t, "the state", func() bool { return len(c.state("cli/counter", "a").Values) > 0 })
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"cli/counter", "nobody"}, "cli/counter/nobody has no state: no message changed it yet"},
		{[]string{"cli/counter", "a", "totalz"}, `cli/counter/a has no state named "totalz": cli/counter declares digits, last, raw, totals`},
		{[]string{"cli/counter", "nobody", "totals"}, `cli/counter/nobody has no value for the state "totals"`},
		{[]string{"cli/countr", "a"}, "no function of type cli/countr has state or ran on this runtime (these have: cli/counter)"},
	} {
		r := twinflow(t, append(append([]string{"state", "get"}, tt.args...), "--data-dir", c.data)...)
		if r.code != exitNoState || r.stdout != "" || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("state get %s: %v\nwant exit status 3 and %q", strings.Join(tt.args, " "), r, tt.want)
		}
	}
	if r := twinflow(t, "state", "get", "cli/counter", "a", "totals", "--data-dir", c.data); r.code != 0 || !strings.Contains(r.stdout, `"totals"`) {
		t.Errorf("state get of a value that is set: %v", r)
	}
}

// TestSendWarnsOfUnhandledTypename: once a function handled messages of
// some typenames, functions lists them, send warns (and still publishes) a
// message of another typename, and a request refused for it says them.
func TestSendWarnsOfUnhandledTypename(t *testing.T) {
	c := startCLI(t)
	c.run("send", "cli/counter", "w", "--json", `{"add": 1}`)
	testwait.For(t, "the state", func() bool { return len(c.state("cli/counter", "w").Values) > 0 })
	if out := c.run("functions"); !strings.Contains(out, "cli/counter\t"+c.endpoint+"\n") || !strings.Contains(out, "  handled messages: twinflow/json\n") {
		t.Errorf("functions:\n%s", out)
	}
	r := twinflow(t, "send", "cli/counter", "w", "--json", `"w"`, "--typename", "twinflow/string", "--data-dir", c.data)
	if r.code != 0 || !strings.Contains(r.stdout, "published to") ||
		!strings.Contains(r.stderr, "warning: cli/counter has handled only twinflow/json since the runtime started, not twinflow/string") {
		t.Errorf("send of another typename: %v", r)
	}
	if r := twinflow(t, "send", "cli/counter", "w", "--json", `{"add": 1}`, "--data-dir", c.data); r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Errorf("send of a handled typename: %v", r)
	}
	// The echo function refuses what is not JSON, at once.
	c.run("request", "cli/echo", "e", "--json", `1`)
	r = twinflow(t, "request", "cli/echo", "e", "--data", "x", "--typename", "twinflow/string", "--data-dir", c.data)
	if r.code != 1 || !strings.Contains(r.stderr, "the runtime answered with an error") || !strings.Contains(r.stderr, "(cli/echo has handled twinflow/json since the runtime started)") {
		t.Errorf("a refused request: %v", r)
	}
}

// TestRequestWithoutReply: a request the function does not answer says so,
// and how to find out why.
func TestRequestWithoutReply(t *testing.T) {
	c := startCLI(t)
	r := twinflow(t, "request", "cli/counter", "r", "--json", `{"add": 1}`, "--timeout", "1s", "--data-dir", c.data)
	for _, want := range []string{"no reply within 1s. The message was accepted, but the function did not answer it", "twinflow tail --all 'twinflow.dlq.>'", "twinflow state get cli/counter r"} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("%v\nwant %q", r, want)
		}
	}
}

// runtimeProcess is twinflow run in the background, its stderr collected.
type runtimeProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	done chan struct{}
}

func (p *runtimeProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startRun starts twinflow run with args on free ports; the test stops it.
func startRun(t *testing.T, args ...string) *runtimeProcess {
	t.Helper()
	args = append([]string{"run", "-nats-port", "-1", "-admin", "127.0.0.1:0", "-memory", "256MiB", "-shards", "2"}, args...)
	p := &runtimeProcess{cmd: exec.Command(binary(t, "twinflow"), args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = os.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// TestRunTakesTheModuleSpecAsArgument: twinflow run module.yaml runs the
// module (and says so), as -config does; twinflow wait waits for it.
func TestRunTakesTheModuleSpecAsArgument(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	module := filepath.Join(dir, "module.yaml")
	if err := os.WriteFile(module, []byte("endpoints:\n  - functions: greeter/*\n    url: http://127.0.0.1:1\negresses:\n  - name: greetings\n    subject: greeter.greetings\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	// Nothing runs yet: wait gives up, saying so.
	r := twinflow(t, "wait", "--data-dir", data, "--timeout", "300ms")
	if r.code != 1 || !strings.Contains(r.stderr, "no runtime became ready within 300ms: ") || !strings.Contains(r.stderr, "no runtime file in") {
		t.Errorf("wait without a runtime: %v", r)
	}
	p := startRun(t, module, "-data", data)
	if r := twinflow(t, "wait", "--data-dir", data); r.code != 0 || !strings.HasPrefix(r.stdout, "twinflow is ready at http://127.0.0.1:") {
		t.Fatalf("wait: %v\nthe runtime's output:\n%s", r, p.output())
	}
	testwait.For(t, "the ready line", func() bool { return strings.Contains(p.output(), "twinflow ready: clients may connect") })
	if out := p.output(); !strings.Contains(out, "module:       "+module+": 1 endpoints, 0 ingresses, 1 egresses") {
		t.Errorf("the runtime's output does not name the module:\n%s", out)
	}
	// The module's endpoint is called: a message to it waits for the
	// endpoint, which does not answer, and the runtime is not ready until
	// it does.
	if r := twinflow(t, "send", "greeter/person", "ada", "--json", `"ada"`, "--data-dir", data); r.code != 0 {
		t.Fatalf("send: %v", r)
	}
	testwait.For(t, "wait to name the endpoint", func() bool {
		r := twinflow(t, "wait", "--data-dir", data, "--timeout", "1s")
		return r.code == 1 && strings.Contains(r.stderr, "no runtime became ready within 1s: ") && strings.Contains(r.stderr, "endpoint http://127.0.0.1:1 unreachable")
	})
	if r := twinflow(t, "stop", "--data-dir", data); r.code != 0 {
		t.Fatalf("stop: %v", r)
	}
	<-p.done

	for _, args := range [][]string{{module, "-config", module}, {module, module}} {
		r := twinflow(t, append([]string{"run", "-data", data}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "module spec") {
			t.Errorf("run %s: %v", strings.Join(args, " "), r)
		}
	}
}

// TestRunWithMQTT: -mqtt-port turns the MQTT gateway on for a module with
// an ingress of topics; run says where and with which identity, the
// runtime file names it, and keys rotates the identity's password.
func TestRunWithMQTT(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	module := filepath.Join(dir, "module.yaml")
	if err := os.WriteFile(module, []byte(`endpoints:
  - functions: dc/*
    url: http://127.0.0.1:1
ingresses:
  - name: devices
    topic: dc1/+/+/metrics
    typename: dc/Report
    targets:
      - function: dc/server
        id: { subjectToken: 2 }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	_, port, _ := strings.Cut(freeAddr(t), ":")
	p := startRun(t, module, "-data", data, "-mqtt-port", port)
	testwait.For(t, "the ready line", func() bool { return strings.Contains(p.output(), "twinflow ready: clients may connect") })
	out := p.output()
	password := filepath.Join(data, "secrets", "mqtt", "device.password")
	for _, want := range []string{"  mqtt:         mqtt://127.0.0.1:" + port + " (MQTT 3.1.1",
		"device device, password in " + password + ", may publish to dc1.*.*.metrics"} {
		if !strings.Contains(out, want) {
			t.Errorf("the runtime's output lacks %q:\n%s", want, out)
		}
	}
	info, err := os.ReadFile(filepath.Join(data, "twinflow.json"))
	if err != nil || !strings.Contains(string(info), `"mqtt_url": "mqtt://127.0.0.1:`+port+`"`) {
		t.Errorf("the runtime file: %s, %v", info, err)
	}
	before, err := os.ReadFile(password)
	if err != nil {
		t.Fatal(err)
	}
	if r := twinflow(t, "keys", "rotate", "mqtt", "device", "--data", data); r.code != 0 || !strings.Contains(r.stdout, "the password of MQTT device device is replaced") {
		t.Errorf("keys rotate mqtt: %v", r)
	}
	if after, _ := os.ReadFile(password); string(after) == string(before) {
		t.Error("the password did not change")
	}
	if r := twinflow(t, "stop", "--data-dir", data); r.code != 0 {
		t.Fatalf("stop: %v", r)
	}
	<-p.done

	// The gateway is the embedded server's, devices need an ingress, and a
	// port taken is said.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-nats", "nats://127.0.0.1:1", "-mqtt-port", port, module}, "the MQTT gateway is the embedded NATS server's"},
		{[]string{"-mqtt-port", port}, "an MQTT device may publish nowhere"},
		{[]string{"-mqtt-port", "0", module}, "the MQTT gateway's port is 0"},
		{[]string{"-mqtt-port", takenPort, "-nats-port", "-1", "-admin", "127.0.0.1:0", module}, "127.0.0.1:" + takenPort + ": MQTT port in use: the MQTT gateway's port is taken"},
	} {
		r := twinflow(t, append([]string{"run", "-data", filepath.Join(dir, "other")}, tt.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("run %s: %v\nwant %q", strings.Join(tt.args, " "), r, tt.want)
		}
	}
}
