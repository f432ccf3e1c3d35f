// Package tsendpoint starts function endpoints written in TypeScript for
// tests: Node programs built by `make ts` (sdk-ts, examples/datacenter/ts)
// that print the URL they serve on.
package tsendpoint

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

var urlLine = regexp.MustCompile(`http://[0-9.]+:[0-9]+`)

// Start runs `node script -listen 127.0.0.1:0` (or --listen, as flag says)
// with env added to the test's environment, waits until it prints its URL,
// and returns the URL. script is relative to the repository root, which is
// root relative to the test's directory. The process is stopped when the
// test ends; its output is logged when the test failed.
func Start(t testing.TB, root, script, flag string, env ...string) string {
	t.Helper()
	path := filepath.Join(root, script)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: build the TypeScript packages first with `make ts` (npm ci, then tsc): %v", script, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (Node 20 or later runs the TypeScript endpoints): %v", err)
	}
	cmd := exec.Command(node, path, flag, "127.0.0.1:0")
	cmd.Env = append(os.Environ(), env...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", script, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, stderr.String())
		}
	})

	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u := urlLine.FindString(sc.Text()); u != "" {
				found <- u
				break
			}
		}
		for sc.Scan() { // keep the pipe drained
		}
	}()
	select {
	case u := <-found:
		return u
	case <-exited:
		t.Fatalf("%s exited before serving: %v\n%s", script, errors.New(cmd.ProcessState.String()), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not print the URL it serves on within 30s\n%s", script, stderr.String())
	}
	return ""
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
