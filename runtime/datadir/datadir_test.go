package datadir

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary act as the other process holding a data
// dir: it locks the dir, says so, and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("DATADIR_HOLD"); dir != "" {
		if _, err := Acquire(dir); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		select {}
	}
	os.Exit(m.Run())
}

// TestAnotherProcessHoldsTheDir locks a dir from a second process: Acquire
// names its pid; once that process is killed, as in a crash, the dir is
// free again.
func TestAnotherProcessHoldsTheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DATADIR_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("the other process said %q", line)
	}

	_, err = Acquire(dir)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != cmd.Process.Pid {
		t.Fatalf("Acquire of a dir another process holds = %v; want it in use by %d", err, cmd.Process.Pid)
	}
	t.Logf("error: %v", err)
	if want := fmt.Sprintf("in use by process %d", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("the error does not say %q: %v", want, err)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestSecondAcquireInProcess checks that the lock also keeps a second user
// in the same process out, until the first releases it.
func TestSecondAcquireInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second Acquire = %v; want it in use by this process (%d)", err, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	_ = l.Release()
}

// TestReadOnlyDir checks that a dir the process may not write is reported
// as a permission problem. Root may write anyway, so there the refusal is
// the one a read-only file system gives.
func TestReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		err := wrap("/data", &os.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EROFS})
		var perm *PermissionError
		if !errors.As(err, &perm) || !strings.Contains(err.Error(), "read-only file system") {
			t.Errorf("wrap(EROFS) = %v, want a PermissionError", err)
		}
		return
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
	}{
		{"new dir", func(t *testing.T) {}},
		{"dir used before", func(t *testing.T) {
			l, err := Acquire(dir)
			if err != nil {
				t.Fatal(err)
			}
			_ = l.Release()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Chmod(dir, 0o755)
			tc.setup(t)
			if err := os.Chmod(dir, 0o555); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, LockFile)); err == nil {
				_ = os.Chmod(filepath.Join(dir, LockFile), 0o444)
			}
			t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
			_, err := Acquire(dir)
			var perm *PermissionError
			if !errors.As(err, &perm) || !strings.Contains(err.Error(), "permission denied") {
				t.Fatalf("Acquire of a read-only dir = %v, want a PermissionError", err)
			}
			t.Logf("error: %v", err)
		})
	}
}
