package natsbus

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/twinflow/twinflow/runtime/natsbus/natsbustest"
)

// identity is an nkey user for a test: its public key and seed file.
type identity struct {
	public, seedFile string
}

func newIdentity(t *testing.T, name string) identity {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	file := filepath.Join(t.TempDir(), name+".nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return identity{public: pub, seedFile: file}
}

// violations connects as id and collects the server's permission errors.
func violations(t *testing.T, url string, id identity, inboxPrefix string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	auth, err := credentials(id.seedFile)
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{auth, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// refused waits for the permission violation naming what.
func refused(t *testing.T, errs <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), what) {
			t.Fatalf("got %v, want a permission violation for %s", err, what)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no permission violation for %s", what)
	}
}

// TestAuthorization runs the same identities on an embedded server and on
// an external nats-server configured with AuthorizationConfig: both refuse
// clients without a known nkey, and hold a restricted user to its
// permissions.
func TestAuthorization(t *testing.T) {
	admin, limited, stranger := newIdentity(t, "admin"), newIdentity(t, "limited"), newIdentity(t, "stranger")
	users := []User{
		{Name: "admin", NKey: admin.public, Unrestricted: true},
		{Name: "limited", NKey: limited.public,
			Publish:   Rules{Allow: []string{"in.>"}, Deny: []string{"in.secret"}},
			Subscribe: Rules{Allow: []string{"out.>", "_INBOX_limited.>"}}},
	}
	modes := map[string]func(t *testing.T) string{
		"embedded": func(t *testing.T) string {
			s, err := StartServer(ServerOptions{Dir: t.TempDir(), Port: -1, Users: users, SyncInterval: time.Minute, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			return s.ClientURL()
		},
		"external": func(t *testing.T) string {
			if testing.Short() {
				t.Skip("builds nats-server")
			}
			return natsbustest.StartExternalServer(t, natsbustest.BuildExternalServer(t), AuthorizationConfig(users))
		},
	}
	for name, start := range modes {
		t.Run(name, func(t *testing.T) {
			url := start(t)
			for _, creds := range []string{"", stranger.seedFile} {
				_, _, err := Connect(ConnOptions{URL: url, CredsFile: creds, Logger: testLogger()})
				var ce *ConnectError
				if !errors.As(err, &ce) || !ce.Unauthorized() || ce.Refused() {
					t.Fatalf("connect with credentials %q: %v; want refused as unauthorized", creds, err)
				}
			}
			watcher, _ := violations(t, url, admin, "")
			got, err := watcher.SubscribeSync(">")
			if err != nil {
				t.Fatal(err)
			}
			if err := watcher.Flush(); err != nil {
				t.Fatal(err)
			}

			nc, errs := violations(t, url, limited, "_INBOX_limited")
			if err := nc.Publish("in.ok", nil); err != nil {
				t.Fatal(err)
			}
			for _, subject := range []string{"out.forged", "in.secret", "_INBOX.x"} {
				if err := nc.Publish(subject, nil); err != nil {
					t.Fatal(err)
				}
				refused(t, errs, `Publish to "`+subject+`"`)
			}
			for _, subject := range []string{">", "_INBOX.>", "in.>"} {
				if _, err := nc.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				refused(t, errs, `Subscription to "`+subject+`"`)
			}
			if _, err := nc.SubscribeSync(nc.NewInbox()); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errs:
				t.Fatalf("subscribing to its own inbox: %v", err)
			default:
			}
			// Of all the publishes, only the allowed one got through.
			m, err := nextApp(got)
			if err != nil || m.Subject != "in.ok" {
				t.Fatalf("first message seen: %v, %v; want in.ok", m, err)
			}
			if err := nc.Publish("in.last", nil); err != nil {
				t.Fatal(err)
			}
			if m, err := nextApp(got); err != nil || m.Subject != "in.last" {
				t.Fatalf("message after the refused ones: %v, %v; want in.last", m, err)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	_, _, err := Connect(ConnOptions{URL: "nats://127.0.0.1:1", Logger: testLogger()})
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Refused() || ce.Unauthorized() {
		t.Fatalf("connect to a closed port: %v; want refused", err)
	}
}

func TestCredentialsFile(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := Connect(ConnOptions{URL: "nats://127.0.0.1:1", CredsFile: bad, Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "neither a NATS credentials file nor an nkey seed file") {
		t.Fatalf("connect with a bad credentials file: %v", err)
	}
}

// nextApp returns the next message of sub that is not one of the server's
// own advisories ($SYS.>, which an external server's operator may see).
func nextApp(sub *nats.Subscription) (*nats.Msg, error) {
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil || !strings.HasPrefix(m.Subject, "$SYS.") {
			return m, err
		}
	}
}
