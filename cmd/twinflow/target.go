package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// Defaults when no runtime is found.
const (
	defaultNATS  = "nats://127.0.0.1:4222"
	defaultAdmin = "http://127.0.0.1:8090"
)

// targetFlags are the flags that say which runtime a client command talks
// to and with which credentials. Each defaults to an environment variable;
// what neither gives comes from the runtime found (see resolve).
type targetFlags struct {
	data string
	// NATS
	nats, creds, inboxPrefix, natsToken, natsCA, natsCert, natsKey string
	// admin API
	admin, adminToken, adminCA string
}

// addNATS registers the data dir and NATS flags.
func (f *targetFlags) addNATS(fs *flag.FlagSet) {
	f.addData(fs)
	fs.StringVar(&f.nats, "nats", os.Getenv("TWINFLOW_NATS"), "NATS server URL (default $TWINFLOW_NATS, else the runtime's)")
	fs.StringVar(&f.creds, "creds", os.Getenv("TWINFLOW_CREDS"), "NATS credentials: an nkey seed file or a .creds file (default $TWINFLOW_CREDS, else the runtime's client credentials)")
	fs.StringVar(&f.inboxPrefix, "inbox-prefix", os.Getenv("TWINFLOW_INBOX_PREFIX"), "prefix of reply inboxes (default $TWINFLOW_INBOX_PREFIX, else the runtime's client prefix)")
	fs.StringVar(&f.natsToken, "nats-token", os.Getenv("TWINFLOW_NATS_TOKEN"), "NATS token (default $TWINFLOW_NATS_TOKEN)")
	fs.StringVar(&f.natsCA, "nats-ca", os.Getenv("TWINFLOW_NATS_CA"), "CA file (PEM) that verifies the NATS server")
	fs.StringVar(&f.natsCert, "nats-cert", "", "client certificate (PEM) for NATS mutual TLS")
	fs.StringVar(&f.natsKey, "nats-key", "", "key of the client certificate")
}

// addAdmin registers the data dir and admin API flags.
func (f *targetFlags) addAdmin(fs *flag.FlagSet) {
	f.addData(fs)
	fs.StringVar(&f.admin, "admin", os.Getenv("TWINFLOW_ADMIN"), "admin API URL (default $TWINFLOW_ADMIN, else the runtime's)")
	fs.StringVar(&f.adminToken, "admin-token", os.Getenv("TWINFLOW_ADMIN_TOKEN"), "admin API token (default $TWINFLOW_ADMIN_TOKEN, else read from the runtime's data dir)")
	fs.StringVar(&f.adminCA, "admin-ca", os.Getenv("TWINFLOW_ADMIN_CA"), "CA file (PEM) that verifies the admin API's certificate")
}

// addData registers --data-dir, and --data as its short name where the
// command has no --data of its own (send and request take it for the
// payload).
func (f *targetFlags) addData(fs *flag.FlagSet) {
	if fs.Lookup("data-dir") != nil {
		return
	}
	const usage = "data dir of the runtime to talk to (default $TWINFLOW_DATA, else ./data if a runtime runs there, else the runtime started last)"
	fs.StringVar(&f.data, "data-dir", os.Getenv("TWINFLOW_DATA"), usage)
	if fs.Lookup("data") == nil {
		fs.StringVar(&f.data, "data", os.Getenv("TWINFLOW_DATA"), "the same as --data-dir")
	}
}

// target is the runtime a command talks to.
type target struct {
	runinfo.Info
	// from says where Info came from, for messages; "" when nothing was
	// found and the defaults apply.
	from string
	// adminToken is the token to send; "" reads the runtime's token file.
	adminToken string
	natsToken  string
	natsCert   string
	natsKey    string
}

// resolve finds the runtime: the runtime file of --data-dir DIR (or
// $TWINFLOW_DATA), else of ./data, else the per-user pointer to the
// runtime started last, else the default addresses without credentials.
// Flags then override what they name.
func (f *targetFlags) resolve() (*target, error) {
	t := &target{}
	switch {
	case f.data != "":
		info, err := runinfo.Read(f.data)
		if err != nil {
			return nil, fmt.Errorf("%w; start it with twinflow run -data %s", err, f.data)
		}
		t.Info, t.from = info, filepath.Join(f.data, runinfo.FileName)
	default:
		if info, err := runinfo.Read("data"); err == nil {
			t.Info, t.from = info, filepath.Join("data", runinfo.FileName)
		} else if info, err := runinfo.Current(); err == nil {
			ptr, _ := runinfo.PointerPath()
			t.Info, t.from = info, "the runtime started last ("+ptr+")"
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if t.from == "" {
		t.NATSURL, t.AdminURL = defaultNATS, defaultAdmin
	}
	if f.nats != "" {
		t.NATSURL = f.nats
	}
	if f.creds != "" {
		t.NATSCreds = f.creds
	}
	if f.inboxPrefix != "" {
		t.NATSInboxPrefix = f.inboxPrefix
	}
	if f.natsCA != "" {
		t.NATSCA = f.natsCA
	}
	t.natsToken, t.natsCert, t.natsKey = f.natsToken, f.natsCert, f.natsKey
	if f.admin != "" && strings.TrimSuffix(f.admin, "/") != t.AdminURL {
		// The runtime's token goes only to the runtime's own address.
		t.AdminURL, t.AdminTokenFile, t.AdminCA = strings.TrimSuffix(f.admin, "/"), "", ""
	}
	if f.adminCA != "" {
		t.AdminCA = f.adminCA
	}
	t.adminToken = f.adminToken
	return t, nil
}

// where says where the addresses came from, for messages.
func (t *target) where() string {
	if t.from == "" {
		return "no runtime was found, so the default address applies"
	}
	s := "found through " + t.from
	if t.PID > 0 && !t.Alive() {
		s += fmt.Sprintf(", written by process %d, which is no longer running", t.PID)
	}
	return s
}

// connectNATS connects to the runtime's NATS server.
func (t *target) connectNATS(name string) (*nats.Conn, jetstream.JetStream, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, js, err := natsbus.Connect(natsbus.ConnOptions{URL: t.NATSURL, Name: name, CredsFile: t.NATSCreds, InboxPrefix: t.NATSInboxPrefix,
		Token: t.natsToken, CAFile: t.NATSCA, CertFile: t.natsCert, KeyFile: t.natsKey, Logger: log})
	var ce *natsbus.ConnectError
	switch {
	case err == nil:
		return nc, js, nil
	case errors.As(err, &ce) && ce.Refused():
		return nil, nil, fmt.Errorf("no NATS server answers at %s (connection refused; %s): no runtime is running there. "+
			"Start one with twinflow run, or point the command at it with --data-dir DIR (its data dir) or --nats URL", t.NATSURL, t.where())
	case errors.As(err, &ce) && ce.Unauthorized():
		used := "no credentials"
		if t.NATSCreds != "" {
			used = "the credentials " + t.NATSCreds
		}
		return nil, nil, fmt.Errorf("the NATS server at %s refused %s (%s). Use the runtime's client credentials: "+
			"--creds DATA/secrets/client.nk, or --data-dir DATA to find them (DATA is the runtime's data dir)", t.NATSURL, used, t.where())
	}
	return nil, nil, err
}

// adminAPI resolves the runtime and returns its admin API client.
func (f *targetFlags) adminAPI() (*target, twinflowv1connect.AdminServiceClient, error) {
	t, err := f.resolve()
	if err != nil {
		return nil, nil, err
	}
	c, err := t.adminClient()
	return t, c, err
}

// adminClient returns the admin API client, with the token.
func (t *target) adminClient() (twinflowv1connect.AdminServiceClient, error) {
	tr, err := runinfo.AdminTransport(t.AdminCA)
	if err != nil {
		return nil, err
	}
	// Without a token the call goes out anyway: the answer says whether a
	// runtime is there, and adminError what to do.
	token := func() (string, error) {
		switch {
		case t.adminToken != "":
			return t.adminToken, nil
		case t.AdminTokenFile == "":
			return "", nil
		}
		return secrets.ReadAdminToken(t.AdminTokenFile)
	}
	return twinflowv1connect.NewAdminServiceClient(&http.Client{Transport: &runinfo.Bearer{Next: tr, Token: token}}, t.AdminURL), nil
}

// adminError explains a failed admin call.
func (t *target) adminError(err error) error {
	switch {
	case err == nil:
		return nil
	case connect.CodeOf(err) == connect.CodeUnavailable && isRefused(err):
		return fmt.Errorf("no runtime answers at %s (connection refused; %s). "+
			"Start one with twinflow run, or point the command at it with --data-dir DIR (its data dir) or --admin URL", t.AdminURL, t.where())
	case connect.CodeOf(err) == connect.CodeUnauthenticated:
		return fmt.Errorf("the admin API at %s refused the call: %s. Use the runtime's admin token: --admin-token TOKEN, "+
			"or --data-dir DIR to read it from the runtime's data dir (%s)", t.AdminURL, connectMessage(err), t.where())
	}
	return err
}

func isRefused(err error) bool {
	return strings.Contains(err.Error(), "connection refused")
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// refusal returns the server's permission violation when it refused what
// the connection did last (a publish or a subscription: the server says so
// only asynchronously, before it answers the flush).
func refusal(nc *nats.Conn) error {
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w; these credentials may not do that (the client identity may publish to ingresses, and subscribe to "+
			"egresses, twinflow.dlq.> and its own inbox: see docs/security.md)", err)
	}
	return nil
}
