// Package natsbustest runs NATS servers for tests, as net/http/httptest
// runs HTTP servers: a nats-server process of the version this module
// requires, for the tests that check the runtime against an external
// server. It is kept apart from natsbus so that the testing package is not
// linked into the twinflow binary.
package natsbustest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

var externalBuild struct {
	sync.Mutex
	path string
}

// BuildExternalServer builds the nats-server binary of the version this
// module requires (go build github.com/nats-io/nats-server/v2) and returns
// its path. The binary is built once per version and Go release and kept in
// the user cache directory, so later runs reuse it. It must run inside the
// module, as tests do.
func BuildExternalServer(t testing.TB) string {
	t.Helper()
	externalBuild.Lock()
	defer externalBuild.Unlock()
	if externalBuild.path != "" {
		return externalBuild.path
	}
	const pkg = "github.com/nats-io/nats-server/v2"
	// The server package linked into this binary is the version go build
	// picks in this module.
	version := server.VERSION
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == pkg && d.Replace != nil {
				version += "-replaced" // a local copy may change: rebuild
			}
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "twinflow-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("nats-server build dir: %v", err)
	}
	name := fmt.Sprintf("nats-server-%s-%s-%s-%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil && !strings.HasSuffix(version, "-replaced") {
		externalBuild.path = bin
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building nats-server needs the go command: %v", err)
	}
	// Build to a private name and rename, so that concurrent test binaries
	// never run a half-written file.
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		t.Fatalf("nats-server build: %v", err)
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(goBin, "build", "-o", tmp.Name(), pkg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		t.Fatalf("nats-server build: %v", err)
	}
	externalBuild.path = bin
	return bin
}

// StartExternalServer runs bin (see [BuildExternalServer]) as a separate
// process with JetStream in a temporary directory, listening on a free
// loopback port, waits until it is ready and returns its client URL. With
// a config (such as natsbus.AuthorizationConfig writes: users and their
// permissions), the server runs with it; without, it accepts every client.
// The process is stopped when the test ends; its log is shown if the test
// failed.
func StartExternalServer(t testing.TB, bin string, config string) string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	if config != "" {
		conf := filepath.Join(dir, "auth.conf")
		if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
			t.Fatalf("nats-server config: %v", err)
		}
		args = append(args, "-c", conf)
	}
	var lastErr error
	for range 3 {
		url, err := startExternal(t, bin, dir, args)
		if err == nil {
			return url
		}
		lastErr = err
	}
	t.Fatalf("start external nats-server: %v", lastErr)
	return ""
}

func startExternal(t testing.TB, bin, dir string, extra []string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	cmd := exec.Command(bin, append(extra, "-js", "-sd", filepath.Join(dir, "js"), "-a", "127.0.0.1", "-p", strconv.Itoa(port))...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var mu sync.Mutex
	var logBuf bytes.Buffer
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			mu.Lock()
			logBuf.WriteString(sc.Text())
			logBuf.WriteByte('\n')
			mu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "Server is ready") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		_ = pw.Close()
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		<-scanned
	}
	logs := func() string {
		mu.Lock()
		defer mu.Unlock()
		return logBuf.String()
	}
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		<-scanned
		return "", fmt.Errorf("nats-server exited: %v\n%s", err, logs())
	case <-time.After(20 * time.Second):
		stop()
		return "", fmt.Errorf("nats-server not ready after 20s\n%s", logs())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("external nats-server log:\n%s", logs())
		}
	})
	return fmt.Sprintf("nats://127.0.0.1:%d", port), nil
}
