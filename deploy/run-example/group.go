package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one process the launcher runs.
type process struct {
	// name names it in what the launcher prints: "the function endpoint".
	name string
	// bin is its executable in the bin directory, or, when onPath is set,
	// a program found on PATH ("node"); args its arguments.
	bin    string
	onPath bool
	args   []string
	// log is the file in the logs directory that gets its output.
	log string
	// show selects lines of its output that the terminal shows too.
	show func(line string) bool
	// stdout sends its standard output to the terminal instead of the log.
	stdout bool
	// ready reports nil once the process serves; nil: ready when started.
	// waitsFor says what it waits for: "to listen on 127.0.0.1:8000".
	ready    func(ctx context.Context) error
	waitsFor string
	// stopWithin is how long it may take to stop after SIGTERM before it
	// is killed.
	stopWithin time.Duration
}

// child is a started process.
type child struct {
	process
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once it has exited and err is set
	err     error
}

// group runs processes, each in a process group of its own so that a
// Ctrl-C on the terminal reaches only the launcher, and stops them in the
// reverse order of their start.
type group struct {
	bin, logs string
	env       []string // added to every process's environment
	out       *terminal
	children  []*child
	exited    chan *child // every child, once it has exited
}

func newGroup(bin, logs string, env []string, out *terminal) *group {
	return &group{bin: bin, logs: logs, env: env, out: out, exited: make(chan *child, 16)} // more than the example has
}

// start starts p.
func (g *group) start(p process) (*child, error) {
	c := &child{process: p, logPath: filepath.Join(g.logs, p.log), done: make(chan struct{})}
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	var output io.Writer = logFile
	if p.show != nil {
		output = &lineFilter{log: logFile, show: p.show, out: g.out}
	}
	exe := filepath.Join(g.bin, p.bin)
	if p.onPath {
		var err error
		if exe, err = exec.LookPath(p.bin); err != nil {
			return nil, fmt.Errorf("%s needs %s: %w", p.name, p.bin, err)
		}
	}
	c.cmd = exec.Command(exe, p.args...)
	c.cmd.Env = append(os.Environ(), g.env...)
	c.cmd.Stdout, c.cmd.Stderr = output, output
	if p.stdout {
		c.cmd.Stdout = g.out
	}
	c.cmd.SysProcAttr = procAttr()
	// Output goes through pipes the launcher reads; a grandchild holding
	// one open must not keep Wait from returning.
	c.cmd.WaitDelay = time.Second
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", p.name, err)
	}
	g.children = append(g.children, c)
	go func() {
		c.err = c.cmd.Wait()
		logFile.Close()
		close(c.done)
		g.exited <- c
	}()
	return c, nil
}

// waitReady polls c.ready until it succeeds, c exits, ctx ends or the
// timeout passes.
func (g *group) waitReady(ctx context.Context, c *child, timeout time.Duration) error {
	if c.ready == nil {
		return nil
	}
	g.out.printf("waiting for %s %s...\n", c.name, c.waitsFor)
	deadline := time.After(timeout)
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		err := c.ready(attempt)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return c.failure("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s was not ready within %s (%v); the last lines of its log, %s:\n%s", c.name, timeout, err, c.logPath, tail(c.logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// failure describes c, which has exited.
func (c *child) failure(what string) error {
	status := "exit status 0"
	if c.err != nil {
		status = c.err.Error()
	}
	return fmt.Errorf("%s %s (%s); the last lines of its log, %s:\n%s", c.name, what, status, c.logPath, tail(c.logPath))
}

// stop stops the running children in the reverse order of their start:
// SIGTERM, then SIGKILL if one takes longer than its stopWithin. Once kill
// is closed, it kills every child left at once. It returns the failure of
// every child that did not exit cleanly.
func (g *group) stop(kill <-chan struct{}) []error {
	var errs []error
	for i := len(g.children) - 1; i >= 0; i-- {
		c := g.children[i]
		select {
		case <-c.done:
			continue // exited already; reported by whoever saw it exit
		case <-kill:
			g.killAll()
			return append(errs, errors.New("stopped at once: every process was killed"))
		default:
		}
		g.out.printf("stopping %s...\n", c.name)
		signalGroup(c.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-c.done:
			if c.err != nil && !terminated(c.err) {
				errs = append(errs, c.failure("failed as it stopped"))
			}
		case <-time.After(c.stopWithin):
			g.out.printf("%s did not stop within %s: killing it\n", c.name, c.stopWithin)
			signalGroup(c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
			errs = append(errs, fmt.Errorf("%s was killed: it did not stop within %s; its log: %s", c.name, c.stopWithin, c.logPath))
		case <-kill:
			g.killAll()
			return append(errs, errors.New("stopped at once: every process was killed"))
		}
	}
	return errs
}

// terminated reports whether err is the exit of a process that SIGTERM
// ended before it could handle it (a process that had just started): a
// stop all the same.
func terminated(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// killAll kills every child and waits for them.
func (g *group) killAll() {
	for _, c := range g.children {
		signalGroup(c.cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, c := range g.children {
		<-c.done
	}
}

// signalGroup sends sig to the process group of the child pid.
func signalGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
}

// tail returns the last lines of the file at path.
func tail(path string) string {
	const n = 20
	data, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// terminal is where the launcher prints. Writes never fail: once the
// terminal is gone (a closed pipe), output is dropped, and the launcher
// goes on stopping its processes.
type terminal struct {
	mu sync.Mutex
	w  io.Writer
}

func (t *terminal) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		if _, err := t.w.Write(p); err != nil {
			t.w = nil
		}
	}
	return len(p), nil
}

func (t *terminal) printf(format string, args ...any) {
	fmt.Fprintf(t, format, args...)
}

// lineFilter writes everything to log and the lines show selects to out.
type lineFilter struct {
	log     io.Writer
	show    func(string) bool
	out     io.Writer
	partial []byte
}

func (f *lineFilter) Write(p []byte) (int, error) {
	if _, err := f.log.Write(p); err != nil {
		return 0, err
	}
	f.partial = append(f.partial, p...)
	for {
		i := bytes.IndexByte(f.partial, '\n')
		if i < 0 {
			return len(p), nil // the rest of the line comes later
		}
		line := string(f.partial[:i])
		f.partial = f.partial[i+1:]
		if f.show(line) {
			fmt.Fprintln(f.out, line)
		}
	}
}
