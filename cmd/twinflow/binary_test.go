package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// These tests run the real twinflow binary (and the greeter example), built
// once, with the version of testVersion stamped in.

const testVersion = "v0.0.0-clitest"

// packageDir is where the tests start, before any of them changes
// directory: the go tool builds from there.
var packageDir, _ = os.Getwd()

var built struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binary returns the path of a binary built from this repository: twinflow
// or greeter.
func binary(t *testing.T, name string) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "twinflow-cli-test-"); built.err != nil {
			return
		}
		args := []string{"build", "-o", built.dir + string(filepath.Separator), "-ldflags", "-X main.version=" + testVersion}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/twinflow/twinflow/cmd/twinflow", "github.com/twinflow/twinflow/examples/greeter")
		cmd := exec.Command("go", args...)
		cmd.Dir = packageDir
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, name)
}

// result is what a run of the binary printed and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// twinflow runs the binary to its end, with the test's environment.
func twinflow(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary(t, "twinflow"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("twinflow %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// isolate keeps the binary away from runtimes the test did not start: a
// private XDG_RUNTIME_DIR, no ./data, no TWINFLOW_* settings.
func isolate(t *testing.T) {
	t.Helper()
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, v := range []string{"TWINFLOW_DATA", "TWINFLOW_NATS", "TWINFLOW_ADMIN", "TWINFLOW_CREDS", "TWINFLOW_ADMIN_TOKEN", "TWINFLOW_INBOX_PREFIX"} {
		t.Setenv(v, "")
	}
	t.Chdir(t.TempDir())
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
