package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests of the group run this test binary as its children: with
// RUN_EXAMPLE_CHILD set, it is a child that behaves as the variable says.
func TestMain(m *testing.M) {
	switch os.Getenv("RUN_EXAMPLE_CHILD") {
	case "":
		code := m.Run()
		if binaries.dir != "" {
			os.RemoveAll(binaries.dir)
		}
		os.Exit(code)
	case "serve": // listen on $ADDR until SIGTERM, then append $NAME to $RECORD
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		l, err := net.Listen("tcp", os.Getenv("ADDR"))
		if err != nil {
			os.Exit(2)
		}
		<-stop
		l.Close()
		f, _ := os.OpenFile(os.Getenv("RECORD"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		f.WriteString(os.Getenv("NAME") + "\n")
		f.Close()
		os.Exit(0)
	case "fail":
		os.Stderr.WriteString("starting\nsomething went wrong\n")
		os.Exit(3)
	case "stubborn": // ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Hour)
	}
}

// testProcess is this test binary as a child; RUN_EXAMPLE_CHILD in the
// group's environment says how it behaves.
func testProcess(name string) process {
	return process{name: name, bin: filepath.Base(os.Args[0]), log: name + ".log", stopWithin: time.Minute}
}

func newTestGroup(t *testing.T, env ...string) (*group, *strings.Builder) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	g := newGroup(filepath.Dir(exe), t.TempDir(), env, &terminal{w: &out})
	t.Cleanup(func() { g.killAll() })
	return g, &out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start starts p with the child's settings in its environment.
func start(t *testing.T, g *group, p process, env ...string) *child {
	t.Helper()
	g.env = append(append([]string{}, g.env...), env...)
	c, err := g.start(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStopInReverseOrder(t *testing.T) {
	record := filepath.Join(t.TempDir(), "stopped")
	g, out := newTestGroup(t, "RUN_EXAMPLE_CHILD=serve", "RECORD="+record)
	for _, name := range []string{"first", "second", "third"} {
		addr := freeAddr(t)
		p := testProcess(name)
		p.ready, p.waitsFor = listening(addr), "to listen on "+addr
		c := start(t, g, p, "NAME="+name, "ADDR="+addr)
		if err := g.waitReady(context.Background(), c, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if errs := g.stop(nil); len(errs) > 0 {
		t.Fatalf("stop: %v", errs)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(data)); strings.Join(got, " ") != "third second first" {
		t.Errorf("stopped in the order %v, want third second first", got)
	}
	if !strings.Contains(out.String(), "stopping third...\nstopping second...\nstopping first...\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestUnexpectedExitNamesTheChild(t *testing.T) {
	g, _ := newTestGroup(t, "RUN_EXAMPLE_CHILD=fail")
	start(t, g, testProcess("the failing one"))
	c := <-g.exited
	msg := c.failure("exited").Error()
	for _, want := range []string{"the failing one exited (exit status 3)", "the failing one.log", "something went wrong"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure %q does not say %q", msg, want)
		}
	}
}

func TestReadyFailsWhenTheChildExits(t *testing.T) {
	g, _ := newTestGroup(t, "RUN_EXAMPLE_CHILD=fail")
	p := testProcess("the failing one")
	addr := freeAddr(t)
	p.ready, p.waitsFor = listening(addr), "to listen on "+addr
	c := start(t, g, p)
	err := g.waitReady(context.Background(), c, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "the failing one exited before it was ready (exit status 3)") {
		t.Fatalf("waitReady = %v", err)
	}
}

func TestKillStopsAtOnce(t *testing.T) {
	g, _ := newTestGroup(t, "RUN_EXAMPLE_CHILD=stubborn")
	p := testProcess("the stubborn one")
	p.stopWithin = time.Hour
	c := start(t, g, p)
	kill := make(chan struct{})
	stopped := make(chan []error)
	go func() { stopped <- g.stop(kill) }()
	close(kill)
	errs := <-stopped
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "every process was killed") {
		t.Errorf("stop = %v", errs)
	}
	if err := syscall.Kill(c.cmd.Process.Pid, 0); err != syscall.ESRCH {
		t.Errorf("the child is still there: kill -0 = %v", err)
	}
}

func TestLineFilter(t *testing.T) {
	var log, out strings.Builder
	f := &lineFilter{log: &log, out: &out, show: func(l string) bool { return strings.Contains(l, "!") }}
	for _, chunk := range []string{"a\nb!", "c\n", "d\ne!\n", "f!"} {
		f.Write([]byte(chunk))
	}
	if log.String() != "a\nb!c\nd\ne!\nf!" || out.String() != "b!c\ne!\n" {
		t.Errorf("log %q, shown %q", log.String(), out.String())
	}
}
