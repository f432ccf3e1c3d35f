package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testwait"
)

// TestREADMEWalkThrough runs the README's five-minute walk through, line by
// line, as someone who pastes it does: each command in order, the ones
// ending in & in the background, each foreground one to its end before the
// next. The lines between commands are the output the README shows: each
// must be printed (by the command before it, or, with "# printed by tail",
// by tail), and the next command waits for it, as the reader does. What
// the test changes is what it must: the binaries are built once rather than
// by go run, and the greeter, its module spec and /tmp/tf move to a free
// port and a temporary directory.
func TestREADMEWalkThrough(t *testing.T) {
	isolate(t)
	lines := walkThrough(t)
	dir := t.TempDir()
	greeterAddr := freeAddr(t)
	module, err := os.ReadFile(filepath.Join(packageDir, "../../examples/greeter/module.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	modulePath := filepath.Join(dir, "module.yaml")
	if err := os.WriteFile(modulePath, bytes.ReplaceAll(module, []byte("127.0.0.1:8000"), []byte(greeterAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	replacer := strings.NewReplacer(
		"go run ./examples/greeter", binary(t, "greeter")+" -listen "+greeterAddr,
		"go run ./cmd/twinflow", binary(t, "twinflow"),
		"examples/greeter/module.yaml", modulePath,
		"/tmp/tf", filepath.Join(dir, "tf"),
	)

	var jobs []*job
	defer func() {
		for _, j := range jobs {
			j.kill()
		}
	}()
	var last *job // the foreground command before the expected output
	var expected []string
	check := func() {
		if len(expected) == 0 {
			return
		}
		want := strings.Join(expected, "\n")
		expected = nil
		if strings.HasPrefix(want, "{") {
			var got, exp any
			if err := json.Unmarshal([]byte(want), &exp); err != nil {
				t.Fatalf("the README's output %s is not JSON: %v", want, err)
			}
			if err := json.Unmarshal([]byte(last.output()), &got); err != nil || !jsonEqual(got, exp) {
				t.Fatalf("%s printed\n%s\nthe README shows\n%s", last.line, last.output(), want)
			}
			return
		}
		for _, w := range strings.Split(want, "\n") {
			from := last
			if text, ok := strings.CutSuffix(w, "# printed by tail"); ok {
				w, from = text, nil
				for _, j := range jobs {
					if strings.Contains(j.line, " tail ") {
						from = j
					}
				}
				if from == nil {
					t.Fatalf("the README shows %q from tail, which it did not start", w)
				}
			}
			w = strings.TrimSpace(w)
			testwait.For(t, "the README's output "+w+" from "+from.line, func() bool { return strings.Contains(from.output(), w) })
		}
	}
	for _, line := range lines {
		cmd, _, _ := strings.Cut(line, "#")
		cmd = strings.TrimSpace(cmd)
		if !strings.HasPrefix(cmd, "go run ") && !strings.HasPrefix(cmd, "kill ") {
			expected = append(expected, line)
			continue
		}
		check()
		background := strings.HasSuffix(cmd, "&")
		cmd = strings.TrimSpace(strings.TrimSuffix(cmd, "&"))
		if job, ok := strings.CutPrefix(cmd, "kill %"); ok {
			i := int(job[0] - '1')
			if i < 0 || i >= len(jobs) {
				t.Fatalf("%s: there is no such job", line)
			}
			if err := jobs[i].cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			jobs[i].wait(t)
			continue
		}
		j := start(t, line, shellWords(t, replacer.Replace(cmd)))
		if background {
			jobs = append(jobs, j)
			continue
		}
		if code := j.wait(t); code != 0 {
			t.Fatalf("%s: exit status %d\n%s", line, code, j.output())
		}
		last = j
	}
	check()
	for _, j := range jobs {
		<-j.done
		t.Logf("%s:\n%s", j.line, j.output())
	}
	// Every background job has ended: the runtime with stop, tail with the
	// runtime, the greeter with kill.
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-time.After(time.Minute):
			t.Fatalf("%s still runs after the walk through; its output:\n%s", j.line, j.output())
		}
	}
}

// walkThrough returns the lines of the README's walk through: the code
// block after "Run it, send a message, read the state".
func walkThrough(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(packageDir, "../../README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "Run it, send a message, read the state")
	if !ok {
		t.Fatal("the README has no walk through")
	}
	_, rest, _ = strings.Cut(rest, "```\n")
	block, _, _ := strings.Cut(rest, "```\n")
	return strings.Split(strings.TrimSpace(block), "\n")
}

// shellWords splits a command line as the shell does, for the quoting the
// walk through uses: single quotes.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %s", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// job is a command of the walk through, with its output (stdout and
// stderr together, as a terminal shows them).
type job struct {
	line string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	code int
}

func (j *job) Write(p []byte) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.out.Write(p)
}

func (j *job) output() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.out.String()
}

func start(t *testing.T, line string, args []string) *job {
	t.Helper()
	j := &job{line: line, cmd: exec.Command(args[0], args[1:]...), done: make(chan struct{})}
	j.cmd.Stdout, j.cmd.Stderr = j, j
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	go func() {
		defer close(j.done)
		_ = j.cmd.Wait()
		j.code = j.cmd.ProcessState.ExitCode()
	}()
	return j
}

// wait waits for the job to end, for a minute at most.
func (j *job) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-j.done:
		return j.code
	case <-time.After(time.Minute):
		t.Fatalf("%s runs for over a minute; its output:\n%s", j.line, j.output())
		return 0
	}
}

func (j *job) kill() {
	_ = j.cmd.Process.Kill()
	<-j.done
}
