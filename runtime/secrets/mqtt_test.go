package secrets

import (
	"os"
	"strings"
	"testing"
)

// TestDevices: a device's password is made once, private, and replaced by
// a rotation; an unknown device cannot be rotated.
func TestDevices(t *testing.T) {
	dir := t.TempDir()
	first, err := EnsureDevices(dir, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := EnsureDevices(dir, []string{"a"})
	if err != nil || again["a"] != first["a"] {
		t.Fatalf("the password changed: %+v, %+v, %v", first["a"], again["a"], err)
	}
	if first["a"].Password == first["b"].Password || len(first["a"].Password) < 40 {
		t.Errorf("passwords %q and %q", first["a"].Password, first["b"].Password)
	}
	fi, err := os.Stat(first["a"].PasswordFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v, %v", fi, err)
	}
	rotated, err := RotateDevicePassword(dir, "a")
	if err != nil || rotated.Password == first["a"].Password {
		t.Fatalf("rotate: %+v, %v", rotated, err)
	}
	if now, _ := EnsureDevices(dir, []string{"a"}); now["a"].Password != rotated.Password {
		t.Errorf("after the rotation the password is %q, want %q", now["a"].Password, rotated.Password)
	}
	if _, err := RotateDevicePassword(dir, "c"); err == nil || !strings.Contains(err.Error(), `no MQTT device "c"`) || !strings.Contains(err.Error(), "a, b") {
		t.Errorf("rotating an unknown device: %v", err)
	}
}
