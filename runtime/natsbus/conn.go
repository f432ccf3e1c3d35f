package natsbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
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
	// CredsFile is a NATS credentials file (JWT and NKey seed).
	CredsFile string
	// Token is an authentication token.
	Token string
	// TLS is the client TLS configuration. CAFile, CertFile and KeyFile
	// are applied on top of it.
	TLS *tls.Config
	// CAFile is a PEM file of root CAs that verify the server.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (PEM).
	CertFile, KeyFile string
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
		o = append(o, nats.UserCredentials(opts.CredsFile))
	}
	if opts.Token != "" {
		o = append(o, nats.Token(opts.Token))
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
		return nil, nil, fmt.Errorf("natsbus: connect to %s: %w", opts.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("natsbus: JetStream context: %w", err)
	}
	log.Debug("NATS connected", "url", nc.ConnectedUrlRedacted())
	return nc, js, nil
}
