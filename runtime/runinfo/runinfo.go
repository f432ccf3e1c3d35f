// Package runinfo tells clients where a running runtime is and which
// credentials to use with it. twinflow run writes an [Info] into its data
// dir (twinflow.json) and a copy into a per-user place that points at the
// runtime started last (see [PointerPath]); both are removed when it stops
// cleanly. The command line finds a runtime through them, and [Info]
// connects to it.
package runinfo

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// FileName is the runtime file in a data dir.
const FileName = "twinflow.json"

// Info is how to reach a runtime. File names are absolute.
type Info struct {
	// Version of the format: 1.
	Version int `json:"version"`
	// PID is the runtime's process id, and Started when it started.
	PID     int       `json:"pid,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// DataDir is the runtime's data dir.
	DataDir string `json:"data_dir"`
	// NATSURL is the NATS server the runtime uses.
	NATSURL string `json:"nats_url"`
	// NATSCreds is the client identity's credentials (an nkey seed file)
	// for the embedded server, and NATSInboxPrefix its reply inbox prefix.
	// Both are empty with an external server, whose credentials the
	// runtime does not know.
	NATSCreds       string `json:"nats_creds,omitempty"`
	NATSInboxPrefix string `json:"nats_inbox_prefix,omitempty"`
	// NATSCA verifies the server's certificate, when it serves TLS.
	NATSCA string `json:"nats_ca,omitempty"`
	// MQTTURL is the embedded server's MQTT gateway (mqtt://host:port, or
	// mqtts://), when it is on. Device passwords are in
	// <data>/secrets/mqtt/<device>.password.
	MQTTURL string `json:"mqtt_url,omitempty"`
	// AdminURL is the base URL of the admin API.
	AdminURL string `json:"admin_url"`
	// AdminTokenFile holds the admin API's bearer token.
	AdminTokenFile string `json:"admin_token_file"`
	// AdminCA verifies the admin API's certificate, when it serves TLS.
	AdminCA string `json:"admin_ca,omitempty"`
	// IngressURL is the base URL of the HTTP/Connect front door, empty when
	// it is off; IngressTokenFile holds its bearer token, and IngressCA
	// verifies its certificate when it serves TLS.
	IngressURL       string `json:"ingress_url,omitempty"`
	IngressTokenFile string `json:"ingress_token_file,omitempty"`
	IngressCA        string `json:"ingress_ca,omitempty"`
	// SigningKeys are the public keys function endpoints should accept
	// (base64 of the raw Ed25519 key): the one the runtime signs with.
	SigningKeys []string `json:"signing_keys"`
}

// Write writes info atomically into its data dir's runtime file and as the
// per-user pointer, both readable by the owner alone.
func Write(info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := secrets.WriteFile(filepath.Join(info.DataDir, FileName), b, 0o600); err != nil {
		return fmt.Errorf("runtime file: %w", err)
	}
	ptr, err := PointerPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(ptr), 0o700); err != nil {
		return fmt.Errorf("runtime pointer: %w", err)
	}
	if err := secrets.WriteFile(ptr, b, 0o600); err != nil {
		return fmt.Errorf("runtime pointer: %w", err)
	}
	return nil
}

// Remove deletes the runtime file of dataDir, and the per-user pointer if
// it still points at that data dir.
func Remove(dataDir string) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return
	}
	_ = os.Remove(filepath.Join(abs, FileName))
	ptr, err := PointerPath()
	if err != nil {
		return
	}
	if cur, err := readFile(ptr); err == nil && cur.DataDir == abs {
		_ = os.Remove(ptr)
	}
}

// Read reads the runtime file of a data dir.
func Read(dataDir string) (Info, error) {
	info, err := readFile(filepath.Join(dataDir, FileName))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("no runtime file in %s: no twinflow run has this data dir, or it has stopped", dataDir)
	}
	return info, err
}

// Current reads the per-user pointer: the runtime started last by this
// user on this machine. It returns an error wrapping fs.ErrNotExist when
// there is none.
func Current() (Info, error) {
	ptr, err := PointerPath()
	if err != nil {
		return Info{}, err
	}
	return readFile(ptr)
}

func readFile(path string) (Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, fmt.Errorf("runtime file %s: %w", path, err)
	}
	if info.Version != 1 {
		return Info{}, fmt.Errorf("runtime file %s has version %d; this twinflow reads version 1", path, info.Version)
	}
	return info, nil
}

// PointerPath is the per-user pointer to the runtime started last:
// $XDG_RUNTIME_DIR/twinflow/current when XDG_RUNTIME_DIR is set (a
// directory private to the user), else twinflow/current in the user's
// configuration directory (~/.config on Linux).
func PointerPath() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "twinflow", "current"), nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("runtime pointer: %w", err)
	}
	return filepath.Join(d, "twinflow", "current"), nil
}

// ConnectNATS connects to the runtime's NATS server as the client
// identity.
func (info Info) ConnectNATS(name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts := natsbus.ConnOptions{URL: info.NATSURL, Name: name, CredsFile: info.NATSCreds, InboxPrefix: info.NATSInboxPrefix, Logger: log}
	if info.NATSCA != "" {
		opts.CAFile = info.NATSCA
	}
	return natsbus.Connect(opts)
}

// AdminHTTPClient returns an HTTP client for the admin API that sends the
// token of AdminTokenFile, read at each request, and trusts AdminCA.
func (info Info) AdminHTTPClient() (*http.Client, error) {
	tr, err := AdminTransport(info.AdminCA)
	if err != nil {
		return nil, err
	}
	file := info.AdminTokenFile
	return &http.Client{Transport: &Bearer{Next: tr, Token: func() (string, error) { return secrets.ReadAdminToken(file) }}}, nil
}

// AdminTransport is an HTTP transport that trusts the certificates of
// caFile (PEM) when it is set, and the system's otherwise.
func AdminTransport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("admin CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin CA %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return tr, nil
}

// Bearer adds "Authorization: Bearer <token>" to every request; with an
// empty token, none.
type Bearer struct {
	Next  http.RoundTripper
	Token func() (string, error)
}

// RoundTrip sends req with the token.
func (b *Bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := b.Token()
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	if tok == "" {
		return b.Next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.Next.RoundTrip(r)
}

// Alive reports whether the process that wrote info still runs, as far as
// this machine can tell: a runtime file left by a crash names a process
// that is gone.
func (info Info) Alive() bool {
	if info.PID <= 0 {
		return true
	}
	p, err := os.FindProcess(info.PID)
	if err != nil {
		return false
	}
	return running(p)
}

// Describe says where info came from and what it points at, for messages.
func (info Info) Describe() string {
	var parts []string
	if info.PID > 0 {
		parts = append(parts, fmt.Sprintf("pid %d", info.PID))
	}
	if !info.Started.IsZero() {
		parts = append(parts, "started "+info.Started.Format(time.RFC3339))
	}
	parts = append(parts, "data dir "+info.DataDir)
	return strings.Join(parts, ", ")
}
