package runinfo

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestWriteReadRemove(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	a, b := t.TempDir(), t.TempDir()
	if _, err := Current(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Current with no runtime: %v", err)
	}
	if _, err := Read(a); err == nil {
		t.Fatal("Read of a data dir without a runtime file succeeded")
	}
	ia := Info{Version: 1, PID: os.Getpid(), DataDir: a, NATSURL: "nats://127.0.0.1:1", AdminURL: "http://127.0.0.1:2"}
	ib := Info{Version: 1, DataDir: b, NATSURL: "nats://127.0.0.1:3", AdminURL: "http://127.0.0.1:4"}
	for _, info := range []Info{ia, ib} {
		if err := Write(info); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(a, FileName), mustPointer(t)} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", f, err, fi.Mode())
		}
	}
	if got, err := Read(a); err != nil || got.NATSURL != ia.NATSURL {
		t.Fatalf("Read(a) = %+v, %v", got, err)
	}
	if got, err := Current(); err != nil || got.DataDir != b {
		t.Fatalf("Current = %+v, %v; want the runtime started last", got, err)
	}
	// Removing a's file leaves the pointer at b.
	Remove(a)
	if _, err := Read(a); err == nil {
		t.Fatal("a's runtime file is still there")
	}
	if got, err := Current(); err != nil || got.DataDir != b {
		t.Fatalf("Current after removing a = %+v, %v", got, err)
	}
	Remove(b)
	if _, err := Current(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Current after removing b: %v", err)
	}
}

func TestAlive(t *testing.T) {
	if !(Info{PID: os.Getpid()}).Alive() {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if (Info{PID: cmd.Process.Pid}).Alive() {
		t.Fatalf("process %d, which has exited, is alive", cmd.Process.Pid)
	}
}

func mustPointer(t *testing.T) string {
	t.Helper()
	p, err := PointerPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
