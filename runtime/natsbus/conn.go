package natsbus

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnOptions configures a client connection.
type ConnOptions struct {
	// URL is the server URL, or several separated by commas. Required.
	URL string
	// Name identifies the connection in the server's monitoring.
	Name string
	// CredsFile authenticates the connection: a NATS credentials file (a
	// user JWT and its nkey seed, for servers in operator mode) or an nkey
	// seed file (as twinflow run writes for its embedded server), told
	// apart by their content.
	CredsFile string
	// InboxPrefix replaces "_INBOX" as the prefix of the connection's reply
	// inboxes. A server that gives each identity its own inbox prefix (as
	// the embedded server does) lets an identity subscribe only under its
	// own.
	InboxPrefix string
	// Token is an authentication token.
	Token string
	// TLS is the client TLS configuration. CAFile, CertFile and KeyFile
	// are applied on top of it.
	TLS *tls.Config
	// CAFile is a PEM file of root CAs that verify the server.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (PEM).
	CertFile, KeyFile string
	// InProcess, when set, connects through this server's in-process pipe
	// instead of dialling URL: a connection of the process that embeds the
	// server then costs no socket system calls and no TCP stack on either
	// side. URL still names the server (in logs), and authentication is the
	// same as over the network, TLS included when the URL asks for it.
	InProcess nats.InProcessConnProvider
	// ReconnectWait is the pause between reconnect attempts to one server.
	// Default 500ms.
	ReconnectWait time.Duration
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
}

// Connect connects to NATS and returns the connection and its JetStream
// context. The first connect must succeed; after that the connection
// reconnects forever and logs disconnects, reconnects and asynchronous
// errors (such as a slow consumer). Close the connection with
// nats.Conn.Close or Drain.
func Connect(opts ConnOptions) (*nats.Conn, jetstream.JetStream, error) {
	if opts.URL == "" {
		return nil, nil, errors.New("natsbus: ConnOptions.URL is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReconnectWait <= 0 {
		opts.ReconnectWait = 500 * time.Millisecond
	}
	log := opts.Logger.With("component", "nats-client")
	if opts.Name != "" {
		log = log.With("conn", opts.Name)
	}
	o := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(opts.ReconnectWait),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil {
				log.Debug("NATS disconnected")
				return
			}
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			log.Debug("NATS connection closed")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("NATS async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("NATS async error", "err", err)
		}),
	}
	if opts.CredsFile != "" {
		auth, err := credentials(opts.CredsFile)
		if err != nil {
			return nil, nil, err
		}
		o = append(o, auth)
	}
	if opts.InboxPrefix != "" {
		o = append(o, nats.CustomInboxPrefix(opts.InboxPrefix))
	}
	if opts.Token != "" {
		o = append(o, nats.Token(opts.Token))
	}
	if opts.InProcess != nil {
		o = append(o, nats.InProcessServer(opts.InProcess))
	}
	if opts.TLS != nil {
		o = append(o, nats.Secure(opts.TLS.Clone()))
	}
	if opts.CAFile != "" {
		o = append(o, nats.RootCAs(opts.CAFile))
	}
	if opts.CertFile != "" || opts.KeyFile != "" {
		o = append(o, nats.ClientCert(opts.CertFile, opts.KeyFile))
	}
	nc, err := nats.Connect(opts.URL, o...)
	if err != nil {
		return nil, nil, &ConnectError{URL: opts.URL, Err: err}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("natsbus: JetStream context: %w", err)
	}
	log.Debug("NATS connected", "url", nc.ConnectedUrlRedacted())
	return nc, js, nil
}

// ConnectError is a failed first connection.
type ConnectError struct {
	URL string
	Err error
}

func (e *ConnectError) Error() string { return fmt.Sprintf("natsbus: connect to %s: %v", e.URL, e.Err) }
func (e *ConnectError) Unwrap() error { return e.Err }

// Refused reports whether nothing listens at the URL. (nats.go reports a
// refused connection to every server as ErrNoServers.)
func (e *ConnectError) Refused() bool {
	return errors.Is(e.Err, nats.ErrNoServers) || errors.Is(e.Err, syscall.ECONNREFUSED)
}

// Unauthorized reports whether the server refused the credentials, or
// their absence.
func (e *ConnectError) Unauthorized() bool {
	return errors.Is(e.Err, nats.ErrAuthorization) || errors.Is(e.Err, nats.ErrAuthExpired) ||
		errors.Is(e.Err, nats.ErrAuthRevoked) || strings.Contains(strings.ToLower(e.Err.Error()), "authorization violation")
}

// credentials returns the option that authenticates with file: a NATS
// credentials file, or an nkey seed file.
func credentials(file string) (nats.Option, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("natsbus: credentials: %w", err)
	}
	defer clear(b)
	if bytes.Contains(b, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(file), nil
	}
	opt, err := nats.NkeyOptionFromSeed(file)
	if err != nil {
		return nil, fmt.Errorf("natsbus: credentials %s: neither a NATS credentials file nor an nkey seed file: %w", file, err)
	}
	return opt, nil
}
