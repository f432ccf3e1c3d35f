package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the launcher as make run does, on the real binaries of
// the example, built once into a temporary directory.

var binaries struct {
	once sync.Once
	dir  string
	err  error
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "run-example-test-bin.")
		if binaries.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binaries.dir+"/",
			"./cmd/twinflow", "./examples/datacenter/cmd/datacenter-functions", "./examples/datacenter/simulator", "./deploy/run-example")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			binaries.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return binaries.dir
}

// launcher returns the launcher's command on free ports, with a module
// spec of deploy/datacenter whose endpoint is on a free port, and the
// directory its data dir is made in.
func launcher(t *testing.T, moduleSpec string) (*exec.Cmd, string) {
	t.Helper()
	bin := buildBinaries(t)
	tmp := t.TempDir()
	module, err := os.ReadFile("../datacenter/" + moduleSpec)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := freeAddr(t)
	// The copy's paths are relative to another directory: the descriptor
	// set is named by its absolute path.
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.NewReplacer("127.0.0.1:8000", endpoint, "../../examples/", examples+"/").Replace(string(module))
	specPath := filepath.Join(tmp, "module.yaml")
	if err := os.WriteFile(specPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, natsPort, _ := net.SplitHostPort(freeAddr(t))
	cmd := exec.Command(filepath.Join(bin, "run-example"), "-bin", bin, "-module", specPath, "-console-page", "../../examples/datacenter/console",
		"-nats-port", natsPort, "-admin", freeAddr(t), "-ingress", freeAddr(t), "-racks", "1", "-servers", "2", "-interval", "100ms", "-faults", "disk:rack-0/srv-1@1s")
	dataParent := filepath.Join(tmp, "tmp")
	if err := os.Mkdir(dataParent, 0o755); err != nil {
		t.Fatal(err)
	}
	// The data dir is made in dataParent; settings of the caller's
	// environment do not apply.
	cmd.Env = append(os.Environ(), "TMPDIR="+dataParent, "DATA=", "FAULTS=", "ALERTS=", "RACKFUN=", "MQTT=", "MQTT_PORT=", "MEMORY=")
	return cmd, dataParent
}

// TestInterruptWithOutputOnAPipe runs the launcher with its output on a
// pipe, as `make run | tee log` does, and interrupts it as Ctrl-C does
// there: the reader of the pipe goes away too. No process and no data dir
// may be left.
func TestInterruptWithOutputOnAPipe(t *testing.T) {
	cmd, dataParent := launcher(t, "module.yaml")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	// A terminal's Ctrl-C goes to its foreground process group: here the
	// launcher's own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Process.Kill()

	started := regexp.MustCompile(`^started (.+) \(pid (\d+)\)$`)
	pids := map[string]int{}
	var output []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		output = append(output, line)
		if m := started.FindStringSubmatch(line); m != nil {
			pids[m[1]], _ = strconv.Atoi(m[2])
		}
		if strings.HasPrefix(line, "Alerts on datacenter.alerts") {
			break
		}
	}
	if len(pids) != 4 {
		t.Fatalf("the launcher started %v; want 4 processes. Its output:\n%s", pids, strings.Join(output, "\n"))
	}
	if !slices.ContainsFunc(output, func(l string) bool {
		return strings.Contains(l, "/ui/login?next=%2Fui%2Fapps%2Fdatacenter%2F#token=")
	}) {
		t.Errorf("the banner has no link to log in to the example's console page. The output:\n%s", strings.Join(output, "\n"))
	}
	checkCurlCall(t, output)
	r.Close() // the reader of the pipe is gone, as tee after Ctrl-C
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the launcher: %v, want exit status 0", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("%s (pid %d) is still there after the launcher exited", name, pid)
		}
	}
	if left := leftOver(t, filepath.Dir(cmd.Path)); len(left) > 0 {
		t.Errorf("processes of the example left running: %v", left)
	}
	if entries, _ := os.ReadDir(dataParent); len(entries) > 0 {
		t.Errorf("the temporary data dir was not removed: %v", entries)
	}
}

// leftOver lists the running processes whose executable is in dir.
func leftOver(t *testing.T, dir string) []string {
	t.Helper()
	exes, err := filepath.Glob("/proc/[0-9]*/exe")
	if err != nil || len(exes) == 0 {
		t.Fatalf("cannot list processes in /proc: %v", err)
	}
	var left []string
	for _, exe := range exes {
		if target, err := os.Readlink(exe); err == nil && filepath.Dir(target) == dir {
			left = append(left, filepath.Base(filepath.Dir(exe))+" "+target)
		}
	}
	return left
}

// TestPortInUse takes the admin API's port first: the launcher must say
// which port, by what, and what to do, and start nothing.
func TestPortInUse(t *testing.T) {
	cmd, dataParent := launcher(t, "module.yaml")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	admin := l.Addr().String()
	cmd.Args = append(cmd.Args, "-admin", admin)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the launcher succeeded with %s taken:\n%s", admin, out)
	}
	want := fmt.Sprintf("run-example: %s (the twinflow admin API) is in use by pid %d (", admin, os.Getpid())
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "is another twinflow running? Stop it with bin/twinflow stop --admin http://"+admin) {
		t.Errorf("output:\n%s\nwant it to say %q and what to do", out, want)
	}
	if strings.Contains(string(out), "started") {
		t.Errorf("the launcher started a process:\n%s", out)
	}
	if entries, _ := os.ReadDir(dataParent); len(entries) > 0 {
		t.Errorf("the launcher made a data dir: %v", entries)
	}
}

// TestDevicesOverMQTT runs the example with the servers as MQTT devices:
// the alerts their reports cause show that the reports reach the twins
// through the MQTT gateway.
func TestDevicesOverMQTT(t *testing.T) {
	cmd, _ := launcher(t, "module-mqtt.yaml")
	_, mqttPort, _ := net.SplitHostPort(freeAddr(t))
	cmd.Args = append(cmd.Args, "-mqtt", "-mqtt-port", mqttPort)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Process.Kill()
	// Against a hang: a second interrupt makes the launcher kill
	// everything, which ends its output.
	stop := time.AfterFunc(2*time.Minute, func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		time.Sleep(time.Second)
		_ = cmd.Process.Signal(syscall.SIGINT)
	})
	defer stop.Stop()
	// The disk of srv-0-1 fails at 1s: its twin opens a disk incident.
	alert := regexp.MustCompile(`server OPEN +rack-0/srv-0-1 DISK`)
	var output []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		output = append(output, sc.Text())
		if alert.MatchString(sc.Text()) {
			break
		}
	}
	if !slices.ContainsFunc(output, alert.MatchString) {
		t.Fatalf("no disk alert; the launcher's output:\n%s", strings.Join(output, "\n"))
	}
	if !slices.ContainsFunc(output, func(l string) bool { return strings.Contains(l, "MQTT               mqtt://127.0.0.1:"+mqttPort) }) {
		t.Errorf("the banner does not name the MQTT gateway:\n%s", strings.Join(output, "\n"))
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	if err := cmd.Wait(); err != nil {
		t.Errorf("the launcher: %v, want exit status 0", err)
	}
}

// checkCurlCall makes the call of the banner's curl command: the front
// door's address and token file it names must answer the data center's
// question with protobuf.
func checkCurlCall(t *testing.T, output []string) {
	t.Helper()
	curl := regexp.MustCompile(`curl -s -X POST (http://\S+) -H "Authorization: Bearer \$\(cat (\S+)\)" -H 'Content-Type: ([^']+)' --data-binary ''`)
	var m []string
	for _, l := range output {
		if m = curl.FindStringSubmatch(l); m != nil {
			break
		}
	}
	if m == nil {
		t.Errorf("the banner has no curl command for the front door:\n%s", strings.Join(output, "\n"))
		return
	}
	token, err := os.ReadFile(m[2])
	if err != nil {
		t.Fatalf("the banner's token file: %v", err)
	}
	req, err := http.NewRequest(http.MethodPost, m[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", m[3])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the banner's curl command: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/protobuf" {
		t.Errorf("the banner's curl command: %s, Content-Type %q, %q; want 200 with protobuf", resp.Status, resp.Header.Get("Content-Type"), body)
	}
}
