package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions configures an embedded NATS server. Dir, and either Users
// or NoAuth, are required; the rest has defaults.
type ServerOptions struct {
	// Dir is the JetStream store directory. Required.
	Dir string
	// Host is the address the client port listens on. Default 127.0.0.1.
	Host string
	// Port is the client port. 0 means [DefaultPort], or a free port when
	// that one is taken; -1 means a free port (see [Server.ClientURL]). Any
	// other port must be free: a taken one is an error wrapping
	// [ErrPortInUse].
	Port int
	// Users are the identities the server accepts, each authenticated by an
	// nkey and limited to its permissions. Clients without a listed nkey
	// are refused.
	Users []User
	// NoAuth starts the server without authentication: every client may do
	// anything. It is for tests and tools that own the server; it cannot be
	// combined with Users.
	NoAuth bool
	// TLS, when set, makes the server accept only TLS connections, with
	// this configuration (its certificate and, for mutual TLS, ClientCAs
	// and ClientAuth).
	TLS *tls.Config
	// SyncInterval is how often JetStream fsyncs its files. The default, 0,
	// fsyncs every write ("sync_interval: always"): an acknowledged publish
	// is on disk. A positive value fsyncs periodically, which is much faster
	// and loses the last interval's acknowledged writes on power loss (not on
	// a process crash).
	SyncInterval time.Duration
	// MQTT, when set, starts the server's MQTT gateway: MQTT 3.1.1 clients
	// publish to topics, which the server turns into subjects. It needs
	// JetStream, where it keeps sessions and QoS 1 and 2 messages (streams
	// named $MQTT_*). MQTT clients authenticate as the Users with a
	// Password.
	MQTT *MQTTOptions
	// MaxPayload is the largest message payload the server accepts.
	// Default: the server's default (1 MiB).
	MaxPayload int32
	// ReadyTimeout bounds the wait for the server to accept clients.
	// Default 10s.
	ReadyTimeout time.Duration
	// Logger receives the server's log. Default slog.Default().
	Logger *slog.Logger
	// OnStoreFailure, when set, is called once when JetStream reports that
	// it could not write its store (a full disk, a permission problem, an
	// I/O error). A single server does not recover from that by itself: the
	// stream that failed refuses every later write, and a permission
	// problem disables JetStream, until the server restarts.
	OnStoreFailure func(error)
}

// MQTTOptions configure the MQTT gateway of an embedded server.
type MQTTOptions struct {
	// Host is the address the gateway listens on. Default 127.0.0.1.
	Host string
	// Port is the gateway's port; -1 means a free port (see
	// [Server.MQTTURL]). A taken port is an error wrapping [ErrPortInUse].
	Port int
	// TLS, when set, makes the gateway accept only TLS connections.
	TLS *tls.Config
}

// User is an identity of an embedded server: an nkey, or a user name and a
// password, and what it may do.
type User struct {
	// Name says who the user is, in logs and rendered configurations; it
	// is the user name of a user with a Password.
	Name string
	// NKey is the user's public nkey ("U..."). The client proves it holds
	// the seed by signing the server's nonce.
	NKey string
	// Password, set instead of NKey, authenticates an MQTT client by the
	// user name Name and this password (MQTT cannot sign a nonce). Such a
	// user may connect over MQTT only.
	Password string
	// Unrestricted users may publish and subscribe to anything (the
	// runtime). Otherwise Publish and Subscribe say what the user may do.
	Unrestricted bool
	// Publish and Subscribe list the subjects (with wildcards) the user may
	// publish to and subscribe to. A subject matching a Deny entry is
	// refused even when an Allow entry matches it.
	Publish, Subscribe Rules
}

// Rules are the subjects a permission allows and denies.
type Rules struct {
	Allow, Deny []string
}

// DefaultPort is the port an embedded server tries first.
const DefaultPort = 4222

// ErrPortInUse is returned when the port asked for is taken.
var ErrPortInUse = errors.New("port in use")

// ErrMQTTPortInUse is returned when the MQTT gateway's port is taken; it
// wraps ErrPortInUse.
var ErrMQTTPortInUse = fmt.Errorf("MQTT %w", ErrPortInUse)

// Server is a running embedded NATS server with JetStream.
type Server struct {
	ns      *server.Server
	log     *slog.Logger
	mqttURL string
}

// InProcessConn returns a new client connection to the server through an
// in-memory pipe (see ConnOptions.InProcess).
func (s *Server) InProcessConn() (net.Conn, error) { return s.ns.InProcessConn() }

// StartServer starts an embedded NATS server with JetStream storing in
// opts.Dir and waits until it accepts clients. Its users all belong to the
// global account; the system account ($SYS: the server's events,
// monitoring and administration) has no user, so no client can reach it.
// (Turning the system account off instead would publish the server's
// events in the global account, where clients could read them.)
func StartServer(opts ServerOptions) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("natsbus: ServerOptions.Dir is required")
	}
	if len(opts.Users) == 0 && !opts.NoAuth {
		return nil, errors.New("natsbus: ServerOptions needs Users, or NoAuth to accept every client")
	}
	if len(opts.Users) > 0 && opts.NoAuth {
		return nil, errors.New("natsbus: ServerOptions.NoAuth cannot be combined with Users")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("component", "nats-server")
	port := opts.Port
	switch {
	case port == 0 && portFree(opts.Host, DefaultPort):
		port = DefaultPort
	case port == 0:
		log.Info("default port taken, picking a free one", "port", DefaultPort)
		port = server.RANDOM_PORT
	case port > 0 && !portFree(opts.Host, port):
		return nil, fmt.Errorf("natsbus: %s: %w", net.JoinHostPort(opts.Host, strconv.Itoa(port)), ErrPortInUse)
	}
	if opts.MQTT != nil {
		m := *opts.MQTT
		if m.Host == "" {
			m.Host = "127.0.0.1"
		}
		if m.Port > 0 && !portFree(m.Host, m.Port) {
			return nil, fmt.Errorf("natsbus: %s: %w", net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), ErrMQTTPortInUse)
		}
		opts.MQTT = &m
	}
	s, err := startServer(opts, port, log)
	if err != nil && port > 0 && !portFree(opts.Host, port) {
		// The port was taken between the check and the bind.
		return nil, fmt.Errorf("natsbus: %s: %w", net.JoinHostPort(opts.Host, strconv.Itoa(port)), ErrPortInUse)
	}
	if m := opts.MQTT; err != nil && m != nil && m.Port > 0 && !portFree(m.Host, m.Port) {
		return nil, fmt.Errorf("natsbus: %s: %w", net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), ErrMQTTPortInUse)
	}
	return s, err
}

func startServer(opts ServerOptions, port int, log *slog.Logger) (*Server, error) {
	sopts := &server.Options{
		ServerName: "twinflow",
		Host:       opts.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.Dir,
		MaxPayload: opts.MaxPayload,
		NoSigs:     true,
	}
	sopts.Nkeys, sopts.Users = serverUsers(opts.Users)
	if m := opts.MQTT; m != nil {
		sopts.MQTT.Host, sopts.MQTT.Port = m.Host, m.Port
		if m.TLS != nil {
			sopts.MQTT.TLSConfig = m.TLS.Clone()
			sopts.MQTT.TLSTimeout = 2
		}
	}
	if opts.TLS != nil {
		sopts.TLSConfig = opts.TLS.Clone()
		sopts.TLS = true
		sopts.TLSVerify = opts.TLS.ClientAuth >= tls.VerifyClientCertIfGiven
		sopts.TLSTimeout = 2
	}
	if opts.SyncInterval <= 0 {
		sopts.SyncAlways = true
	} else {
		sopts.SyncInterval = opts.SyncInterval
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: configure server: %w", err)
	}
	ns.SetLoggerV2(slogAdapter{log: log, onStoreFailure: onceFunc(opts.OnStoreFailure)}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(opts.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsbus: server on %s not ready after %s", net.JoinHostPort(opts.Host, strconv.Itoa(port)), opts.ReadyTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsbus: JetStream did not start in %s", opts.Dir)
	}
	srv := &Server{ns: ns, log: log}
	if m := opts.MQTT; m != nil {
		// The server wrote the port it took into its options.
		srv.mqttURL = mqttURL(m.Host, sopts.MQTT.Port, m.TLS != nil)
		log.Info("MQTT gateway ready", "url", srv.mqttURL, "tls", m.TLS != nil)
	}
	log.Info("NATS server ready", "url", ns.ClientURL(), "store", opts.Dir, "sync_always", sopts.SyncAlways,
		"users", len(opts.Users), "tls", opts.TLS != nil)
	return srv, nil
}

// serverUsers turns users into the server's nkey users and the users with
// a password (MQTT only).
func serverUsers(users []User) ([]*server.NkeyUser, []*server.User) {
	var nkeys []*server.NkeyUser
	var named []*server.User
	for _, u := range users {
		var perms *server.Permissions
		if !u.Unrestricted {
			perms = &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: nonNil(u.Publish.Allow), Deny: u.Publish.Deny},
				Subscribe: &server.SubjectPermission{Allow: u.Subscribe.Allow, Deny: u.Subscribe.Deny},
			}
			if len(u.Subscribe.Allow) == 0 {
				// The server reads an empty subscribe allow list as no
				// restriction at all: deny everything instead.
				perms.Subscribe.Deny = append(slices.Clone(u.Subscribe.Deny), ">")
			}
		}
		if u.Password != "" {
			named = append(named, &server.User{Username: u.Name, Password: u.Password, Permissions: perms,
				AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeMqtt: {}}})
			continue
		}
		nkeys = append(nkeys, &server.NkeyUser{Nkey: u.NKey, Permissions: perms})
	}
	return nkeys, named
}

// mqttURL is the URL MQTT clients connect to: mqtt://host:port, or
// mqtts:// with TLS. A gateway listening on every interface is reached on
// the loopback address.
func mqttURL(host string, port int, tls bool) string {
	if host == "0.0.0.0" || host == "::" || host == "" {
		host = "127.0.0.1"
	}
	scheme := "mqtt"
	if tls {
		scheme = "mqtts"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// nonNil keeps an empty publish allow list meaning "nothing": the server
// treats a nil publish Allow as no restriction, and an empty one as
// allowing nothing. (Not so for subscribe: see serverUsers.)
func nonNil(s []string) []string {
	if len(s) == 0 {
		return []string{}
	}
	return s
}

// portFree reports whether host:port can be listened on right now.
func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// ClientURL returns the URL clients connect to, e.g. nats://127.0.0.1:4222
// (tls:// with TLS). A server listening on every interface is reached on
// the loopback address.
func (s *Server) ClientURL() string {
	u := s.ns.ClientURL()
	for _, everywhere := range []string{"0.0.0.0", "[::]"} {
		if host := "//" + everywhere + ":"; strings.Contains(u, host) {
			return strings.Replace(u, host, "//127.0.0.1:", 1)
		}
	}
	return u
}

// MQTTURL returns the URL MQTT clients connect to (mqtt://127.0.0.1:1883,
// mqtts:// with TLS), or "" when the gateway is off.
func (s *Server) MQTTURL() string { return s.mqttURL }

// Shutdown stops the server and waits until it has stopped. JetStream state
// is flushed to the store directory.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// slogAdapter sends nats-server's log to slog, and watches it for the
// failures of JetStream's store.
type slogAdapter struct {
	log            *slog.Logger
	onStoreFailure func(error)
}

func (a slogAdapter) logf(level slog.Level, format string, v []any) {
	if level >= slog.LevelWarn && a.onStoreFailure != nil {
		if msg := fmt.Sprintf(format, v...); isStoreFailure(msg) {
			a.onStoreFailure(errors.New(msg))
		}
	}
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	a.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// isStoreFailure recognizes the messages with which nats-server reports a
// store it cannot write any more: the only signal an embedded server gives.
// Its own test (isOutOfSpaceErr) matches error text the same way; the
// package's tests check these against the server in use.
func isStoreFailure(msg string) bool {
	return strings.Contains(msg, "Critical write error") || // a stream's file store (filestore.go)
		strings.Contains(msg, "critical write error") || // a stream (stream.go)
		strings.Contains(msg, "disabling JetStream") || // permission denied (stream.go)
		strings.Contains(msg, "will be DISABLED") // out of space in clustered mode (jetstream.go)
}

// onceFunc returns a func calling f on its first call only; nil for nil.
func onceFunc(f func(error)) func(error) {
	if f == nil {
		return nil
	}
	var once sync.Once
	return func(err error) { once.Do(func() { f(err) }) }
}

// Noticef logs at debug level: the server's notices are its start-up
// banner and routine events; StartServer logs the essentials itself.
func (a slogAdapter) Noticef(format string, v ...any) { a.logf(slog.LevelDebug, format, v) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.logf(slog.LevelWarn, format, v) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.logf(slog.LevelError, format, v) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.logf(slog.LevelDebug, format, v) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.logf(slog.LevelDebug-4, format, v) }

// Fatalf logs at error level. An embedded server must never exit the
// process; the failure surfaces as a server that is not ready.
func (a slogAdapter) Fatalf(format string, v ...any) { a.logf(slog.LevelError, format, v) }
