package runtime

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/twinflow/twinflow/runtime/console"
)

// openPaths are served without the token: the health probes (for
// orchestrators, which hold no token) and the public signing keys.
var openPaths = map[string]bool{"/healthz": true, "/livez": true, "/readyz": true, "/signing-keys": true}

// adminGuard stands in front of every admin handler: it bounds request
// bodies, and lets through to the API only calls that carry the token or
// come over TLS with a client certificate the API's CAs verified.
type adminGuard struct {
	next        http.Handler
	token       *tokenFile
	sessions    *console.Sessions // the console's logged-in browsers
	metricsOpen bool
	maxBody     int64
	errors      *connect.ErrorWriter
}

// isConsole reports whether a path is the console's, which authenticates
// its own requests: its login page and static files are open.
func isConsole(path string) bool { return path == "/ui" || strings.HasPrefix(path, console.Prefix) }

func (g *adminGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > g.maxBody {
		g.fail(w, r, connect.CodeResourceExhausted, http.StatusRequestEntityTooLarge,
			fmt.Errorf("request body of %d bytes exceeds the admin API's limit of %d bytes", r.ContentLength, g.maxBody))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, g.maxBody)
	if !openPaths[r.URL.Path] && !(r.URL.Path == "/metrics" && g.metricsOpen) && !isConsole(r.URL.Path) {
		if err := g.authenticate(r); err != nil {
			g.fail(w, r, connect.CodeUnauthenticated, http.StatusUnauthorized, err)
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

func (g *adminGuard) authenticate(r *http.Request) error {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return nil // a client certificate of the configured CAs
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		// A browser logged in to the console.
		if err := g.sessions.Authenticate(r); !errors.Is(err, console.ErrNoSession) {
			return err
		}
		return errors.New("the admin API needs its token: send Authorization: Bearer <token>; the token is in the runtime's data dir, " +
			"secrets/admin.token (twinflow reads it there, or takes --admin-token)")
	}
	want, err := g.token.current()
	if err != nil {
		return fmt.Errorf("the admin API cannot read its token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
		return errors.New("the admin API refused the token: it is not this runtime's (read it again from the data dir's secrets/admin.token; it may have been rotated)")
	}
	return nil
}

// fail answers with err, as a Connect error to Connect, gRPC and gRPC-Web
// clients and as plain text to others.
func (g *adminGuard) fail(w http.ResponseWriter, r *http.Request, code connect.Code, status int, err error) {
	if g.errors.IsSupported(r) {
		_ = g.errors.Write(w, r, connect.NewError(code, err))
		return
	}
	if code == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="twinflow"`)
	}
	http.Error(w, err.Error(), status)
}

// tokenFile is the admin token, read again whenever its file changes, so
// that a rotated token takes effect without a restart.
type tokenFile struct {
	path string
	mu   struct {
		sync.Mutex
		mod   time.Time
		size  int64
		token []byte
	}
}

func (t *tokenFile) current() ([]byte, error) {
	fi, err := os.Stat(t.path)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.token != nil && fi.ModTime().Equal(t.mu.mod) && fi.Size() == t.mu.size {
		return t.mu.token, nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil, err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) == 0 {
		return nil, fmt.Errorf("token file %s is empty", t.path)
	}
	t.mu.token, t.mu.mod, t.mu.size = tok, fi.ModTime(), fi.Size()
	return tok, nil
}

// adminListener listens on the admin address: the one configured, or by
// default 127.0.0.1:8090 and a free port when that one is taken. With a
// certificate it serves TLS.
func (e *Engine) adminListener() (net.Listener, error) {
	addr := e.cfg.AdminAddr
	l, err := net.Listen("tcp", cmp.Or(addr, "127.0.0.1:8090"))
	if err != nil && addr == "" {
		e.log.Info("default admin port taken, picking a free one", "addr", "127.0.0.1:8090")
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("admin address %s: %w", cmp.Or(addr, "127.0.0.1:8090"), err)
	}
	if e.cfg.AdminTLSCertFile == "" {
		return l, nil
	}
	cfg, err := serverTLS(e.cfg.AdminTLSCertFile, e.cfg.AdminTLSKeyFile, e.cfg.AdminClientCAFile)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("admin API TLS: %w", err)
	}
	return tls.NewListener(l, cfg), nil
}

// adminOpenMetrics says whether /metrics is served without the token.
func (e *Engine) adminOpenMetrics() bool {
	switch e.cfg.MetricsAuth {
	case MetricsAuthNone:
		return true
	case MetricsAuthToken:
		return false
	}
	return isLoopback(adminHost(e.cfg.AdminAddr))
}

// guardAdmin wraps the admin handlers.
func (e *Engine) guardAdmin(h http.Handler, sessions *console.Sessions) http.Handler {
	return &adminGuard{next: h, token: e.adminToken, sessions: sessions, metricsOpen: e.adminOpenMetrics(),
		maxBody: e.cfg.MaxAdminRequestBytes, errors: connect.NewErrorWriter()}
}

// consoleSessions checks the console's sessions against the admin token.
func (e *Engine) consoleSessions() *console.Sessions {
	return &console.Sessions{Token: e.adminToken.current, Secure: e.cfg.AdminTLSCertFile != ""}
}

// consoleHandler serves the console, with the module's pages.
func (e *Engine) consoleHandler(sessions *console.Sessions) (http.Handler, error) {
	return console.Handler(console.Options{Sessions: sessions, Feed: e.platform, Apps: e.cfg.ConsolePages, Logger: e.log})
}

// serverTLS is a server's TLS configuration: its certificate, and when
// clientCA is set, client certificates of those CAs verified if given.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := certPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

func certPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// savepointPath resolves the savepoint dir of a stop request: a relative
// name is taken under the configured savepoint dir, an absolute path must
// lie within it, and ".." is refused outright. The admin API writes nowhere
// else: a caller who could name any directory could write the state's
// files anywhere the runtime may write.
func (e *Engine) savepointPath(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	root, err := filepath.Abs(e.cfg.SavepointDir)
	if err != nil {
		return "", err
	}
	if strings.Contains(filepath.ToSlash(dir), "..") {
		for _, part := range strings.Split(filepath.ToSlash(dir), "/") {
			if part == ".." {
				return "", fmt.Errorf("savepoint dir %q contains \"..\": give a name under %s", dir, root)
			}
		}
	}
	p := dir
	if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	p = filepath.Clean(p)
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("savepoint dir %s is outside %s, the only directory the admin API writes savepoints under "+
			"(give a name, or start twinflow run with another -savepoint-dir)", dir, root)
	}
	return p, nil
}

// writeSavepoint writes the savepoint into dir with owner-only access: its
// parents (up to the configured savepoint dir) and itself 0700, its files
// 0600.
func (e *Engine) writeSavepoint(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := e.store.Savepoint(dir); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o700)
		}
		return os.Chmod(path, 0o600)
	})
}
