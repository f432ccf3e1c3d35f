package secrets

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mqttDir holds the passwords of the MQTT device identities. MQTT clients
// authenticate with a user name and a password: the protocol cannot sign
// the server's nonce, as an nkey does.
const mqttDir = "mqtt"

// Device is an MQTT device identity.
type Device struct {
	// Name is its user name.
	Name string
	// PasswordFile holds its password, for the device to connect with.
	PasswordFile string
	// Password is the password, which the embedded server checks.
	Password string
}

// DevicePasswordFile is where the password of an MQTT device identity is.
func DevicePasswordFile(secretsDir, name string) string {
	return filepath.Join(secretsDir, mqttDir, name+".password")
}

// EnsureDevices makes a password for each MQTT device identity named that
// has none yet, and reads them all.
func EnsureDevices(dataDir string, names []string) (map[string]Device, error) {
	s, err := Ensure(dataDir, nil)
	if err != nil {
		return nil, err
	}
	if err := privateDir(filepath.Join(s.Dir, mqttDir)); err != nil {
		return nil, err
	}
	out := map[string]Device{}
	for _, name := range names {
		file := DevicePasswordFile(s.Dir, name)
		if err := ensureFile(file, newToken); err != nil {
			return nil, err
		}
		pw, err := readPassword(file)
		if err != nil {
			return nil, err
		}
		out[name] = Device{Name: name, PasswordFile: file, Password: pw}
	}
	return out, nil
}

// readPassword reads a device's password file.
func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("secrets: %s is empty; remove it to have a new password made", file)
	}
	return pw, nil
}

// RotateDevicePassword replaces the password of an MQTT device identity.
// The embedded server knows the passwords it started with: the new one
// works, and the old one stops working, when the runtime restarts.
func RotateDevicePassword(dataDir, name string) (Device, error) {
	s, err := Ensure(dataDir, nil)
	if err != nil {
		return Device{}, err
	}
	file := DevicePasswordFile(s.Dir, name)
	if _, err := os.Stat(file); err != nil {
		return Device{}, fmt.Errorf("no MQTT device %q in %s: the devices are %s", name, s.Dir, strings.Join(deviceNames(s.Dir), ", "))
	}
	b, err := newToken()
	if err != nil {
		return Device{}, err
	}
	if err := WriteFile(file, b, 0o600); err != nil {
		return Device{}, err
	}
	pw, err := readPassword(file)
	return Device{Name: name, PasswordFile: file, Password: pw}, err
}

func deviceNames(secretsDir string) []string {
	var names []string
	entries, _ := os.ReadDir(filepath.Join(secretsDir, mqttDir))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".password"); ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return []string{"none"}
	}
	return names
}
