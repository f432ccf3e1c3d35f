package main

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// TestCommandsFindTheRuntime: without --data-dir the commands find the
// runtime through $TWINFLOW_DATA, ./data, or the pointer to the runtime
// started last, with its credentials.
func TestCommandsFindTheRuntime(t *testing.T) {
	dir := t.TempDir()
	c := startCLIIn(t, filepath.Join(dir, "data"))
	t.Chdir(t.TempDir()) // no ./data here
	// The pointer.
	if out, err := c.try("send", "cli/counter", "a", "--json", `{"add": 1}`); err != nil || !strings.Contains(out, "published") {
		t.Fatalf("send through the pointer: %q, %v", out, err)
	}
	if out, err := c.try("checkpoint", "list"); err != nil || !strings.HasPrefix(out, "ID") {
		t.Fatalf("checkpoint list through the pointer: %q, %v", out, err)
	}
	// $TWINFLOW_DATA, with the pointer gone.
	ptr := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "twinflow", "current")
	if err := os.Remove(ptr); err != nil {
		t.Fatal(err)
	}
	// Nothing to find: the defaults, without credentials. (Whether a
	// runtime listens there depends on the machine.)
	none, err := (&targetFlags{}).resolve()
	if err != nil || none.from != "" || none.NATSURL != defaultNATS || none.AdminURL != defaultAdmin || none.NATSCreds != "" || none.AdminTokenFile != "" {
		t.Fatalf("resolve with nothing to find: %+v, %v", none, err)
	}
	t.Setenv("TWINFLOW_DATA", c.data)
	if _, err := c.try("checkpoint", "list"); err != nil {
		t.Fatalf("checkpoint list with TWINFLOW_DATA: %v", err)
	}
	t.Setenv("TWINFLOW_DATA", "")
	// ./data.
	t.Chdir(dir)
	if out, err := c.try("request", "cli/echo", "e", "--json", `"hi"`); err != nil || !strings.Contains(out, `"id":"e"`) {
		t.Fatalf("request through ./data: %q, %v", out, err)
	}
	// A data dir without a runtime.
	_, err = c.try("state", "get", "cli/counter", "a", "--data", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "no runtime file in") || !strings.Contains(err.Error(), "twinflow run -data") {
		t.Fatalf("--data of a dir without a runtime: %v", err)
	}
}

// TestRefusalsSayWhatToDo: a connection refused, or credentials refused,
// say what happened and how to point the command elsewhere.
func TestRefusalsSayWhatToDo(t *testing.T) {
	c := startCLI(t)
	stranger, _ := nkeys.CreateUser()
	seed, _ := stranger.Seed()
	strangerFile := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(strangerFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	nats := c.e.Access().NATSURL
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"send", "cli/counter", "a", "--json", "1", "--nats", "nats://127.0.0.1:1"},
			[]string{"no NATS server answers at nats://127.0.0.1:1 (connection refused", "no runtime is running there", "--data-dir DIR"}},
		{[]string{"send", "cli/counter", "a", "--json", "1", "--nats", nats, "--creds", strangerFile},
			[]string{"refused the credentials " + strangerFile, "--creds DATA/secrets/client.nk"}},
		{[]string{"send", "cli/counter", "a", "--json", "1", "--nats", nats, "--creds", ""},
			[]string{}},
		{[]string{"state", "get", "cli/counter", "a", "--admin", "http://127.0.0.1:1", "--admin-token", "x"},
			[]string{"no runtime answers at http://127.0.0.1:1 (connection refused", "--data-dir DIR"}},
		{[]string{"state", "get", "cli/counter", "a", "--admin-token", "wrong", "--data-dir", c.data},
			[]string{"refused the call: the admin API refused the token", "--admin-token TOKEN"}},
		{[]string{"state", "get", "cli/counter", "a", "--admin", c.e.AdminURL() + "/"},
			[]string{}},
		{[]string{"state", "get", "cli/counter", "a", "--admin", strings.Replace(c.e.AdminURL(), "127.0.0.1", "localhost", 1)},
			[]string{"refused the call: the admin API needs its token", "--admin-token TOKEN"}},
	}
	for _, tt := range tests {
		for range 2 {
			_, err := c.try(tt.args...)
			if len(tt.want) == 0 {
				// The command reached the runtime; the address has no
				// state, which state get says with exit status 3.
				if err != nil && exitCode(err) != exitNoState {
					t.Errorf("twinflow %s: %v", strings.Join(tt.args, " "), err)
				}
				continue
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("twinflow %s: %v; want %q in the error", strings.Join(tt.args, " "), err, w)
				}
			}
		}
	}
}

// TestForgedReplyNeverReachesRequest: while another identity tries to
// read and answer the client's inboxes, and another client connection
// answers every inbox message it sees, twinflow request prints the
// function's answer, every time.
func TestForgedReplyNeverReachesRequest(t *testing.T) {
	c := startCLI(t)
	info := c.e.Access()
	// The client identity itself: it may read its inboxes, but not
	// answer on them. (Other identities may not even read them: see the
	// runtime's TestForgedReplyNeverReachesTheRequester.)
	clientAuth, err := nats.NkeyOptionFromSeed(info.NATSCreds)
	if err != nil {
		t.Fatal(err)
	}
	violations := make(chan error, 64)
	attacker, err := nats.Connect(info.NATSURL, clientAuth, nats.CustomInboxPrefix(info.NATSInboxPrefix),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	if _, err := attacker.Subscribe(info.NATSInboxPrefix+".>", func(m *nats.Msg) {
		f := nats.NewMsg(m.Subject)
		f.Header.Set(router.TypenameHeader, "twinflow/json")
		f.Data = []byte(`{"forged": true}`)
		_ = attacker.PublishMsg(f)
	}); err != nil {
		t.Fatal(err)
	}
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		out := c.run("request", "cli/echo", "e", "--json", `"ping"`)
		if strings.Contains(out, "forged") || !strings.Contains(out, `"id":"e"`) {
			t.Fatalf("request %d printed %q", i, out)
		}
		select {
		case err := <-violations:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `Publish to "`+info.NATSInboxPrefix+`.`) {
				t.Fatalf("attacker: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the forged answer was not refused")
		}
	}
}

// TestTailDeadLetters: the client identity reads the dead-letter stream, as
// the README shows, without any right to change it.
func TestTailDeadLetters(t *testing.T) {
	c := startCLI(t)
	if _, err := c.try("send", "cli/counter", "x", "--data", "not json", "--typename", "twinflow/json", "--data-dir", c.data); err != nil {
		t.Fatal(err)
	}
	out, stop := c.tail("--all", "twinflow.dlq.>")
	// Dead letters of functions are published once a checkpoint covers
	// them.
	last := time.Time{}
	testwait.For(t, "the dead letter", func() bool {
		if time.Since(last) > 100*time.Millisecond {
			c.run("checkpoint", "now")
			last = time.Now()
		}
		return strings.Contains(out.String(), "twinflow.dlq.function")
	})
	if printed := stop(); !strings.Contains(printed, `error="`) {
		t.Errorf("tail printed %q", printed)
	}
}

// TestKeys: twinflow keys prints the key the runtime signs with, rotates
// it, and renders the identities for an external server.
func TestKeys(t *testing.T) {
	c := startCLI(t)
	out := strings.TrimSpace(c.run("keys"))
	if want := c.e.SigningKeys()[0]; out != want {
		t.Fatalf("keys printed %q, want %q", out, want)
	}
	rotated := c.run("keys", "rotate", "signing")
	if !strings.Contains(rotated, "TWINFLOW_VERIFY_KEY=") || !strings.Contains(rotated, ","+c.e.SigningKeys()[0]) {
		t.Fatalf("keys rotate signing printed %q", rotated)
	}
	if both := strings.TrimSpace(c.run("keys")); strings.Count(both, ",") != 1 || !strings.HasSuffix(both, c.e.SigningKeys()[0]) {
		t.Fatalf("keys during a rotation printed %q", both)
	}
	// The admin token changes at once; the command reads the new one.
	before, _ := secrets.ReadAdminToken(c.e.Access().AdminTokenFile)
	c.run("keys", "rotate", "admin-token")
	if after, _ := secrets.ReadAdminToken(c.e.Access().AdminTokenFile); after == before {
		t.Fatal("the admin token did not change")
	}
	c.run("checkpoint", "status")
	// So does the front door's: the old one is refused.
	post := func(token string) int {
		req, _ := http.NewRequest(http.MethodPost, c.e.IngressURL()+"/send/cli/counter/a", strings.NewReader(`{"add": 1}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tokenFile := c.e.Access().IngressTokenFile
	before, _ = secrets.ReadIngressToken(tokenFile)
	if status := post(before); status != http.StatusAccepted {
		t.Fatalf("the front door with its token: %d", status)
	}
	c.run("keys", "rotate", "ingress-token")
	after, _ := secrets.ReadIngressToken(tokenFile)
	if status := post(before); after == before || status != http.StatusUnauthorized {
		t.Fatalf("the old front door token after a rotation: %d, want 401", status)
	}
	if status := post(after); status != http.StatusAccepted {
		t.Fatalf("the new front door token: %d", status)
	}
	conf := c.run("keys", "nats-config")
	for _, want := range []string{"authorization {", "# client", `"twinflow.in.>"`, `"twinflow.batch"`, `"twinflow.call.>"`, `"_INBOX_client.>"`, `"$JS.API.DIRECT.GET.TWINFLOW_DLQ"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats-config lacks %s:\n%s", want, conf)
		}
	}
	if _, err := c.try("keys", "rotate", "nats", "nobody", "--data", c.data); err == nil || !strings.Contains(err.Error(), `no identity "nobody"`) {
		t.Fatalf("rotating an unknown identity: %v", err)
	}
}

// TestStopWithSavepoint: a savepoint name lands under the runtime's
// savepoint dir; a path elsewhere is refused.
func TestStopWithSavepoint(t *testing.T) {
	c := startCLI(t)
	_, err := c.try("stop", "--savepoint", t.TempDir(), "--data-dir", c.data)
	if err == nil || !strings.Contains(err.Error(), "the only directory the admin API writes savepoints under") {
		t.Fatalf("stop with a savepoint outside: %v", err)
	}
	out := c.run("stop", "--savepoint", "before-upgrade")
	want := filepath.Join(c.data, "savepoints", "before-upgrade")
	if !strings.Contains(out, "savepoint: "+want) {
		t.Fatalf("stop printed %q, want the savepoint %s", out, want)
	}
	if _, err := os.Stat(want); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedByPermissions: what the credentials may not do is refused at
// once, with the server's reason.
func TestRefusedByPermissions(t *testing.T) {
	c := startCLI(t)
	for range 2 {
		_, err := c.try("tail", "twinflow.in.>", "--data-dir", c.data)
		if err == nil || !strings.Contains(err.Error(), `Permissions Violation for Subscription to "twinflow.in.>"`) {
			t.Fatalf("tail of an ingress subject: %v", err)
		}
	}
	// With an inbox prefix not its own, no acknowledgement can reach the
	// client.
	_, err := c.try("send", "cli/counter", "a", "--json", "1", "--data-dir", c.data, "--inbox-prefix", "_INBOX_other")
	if err == nil || !strings.Contains(err.Error(), `Permissions Violation for Subscription to "_INBOX_other.`) {
		t.Fatalf("send with another identity's inbox prefix: %v", err)
	}
	// A module user that may only read the egress may not send.
	reader := filepath.Join(c.data, "secrets", "users", "reader.nk")
	_, err = c.try("send", "cli/counter", "a", "--json", "1", "--data-dir", c.data, "--creds", reader, "--inbox-prefix", "_INBOX_reader")
	if err == nil || !strings.Contains(err.Error(), `Permissions Violation for Publish to "twinflow.in.cli.counter.a"`) {
		t.Fatalf("send as the reader: %v", err)
	}
	out, stop := c.tail("cli.out", "--creds", reader, "--inbox-prefix", "_INBOX_reader")
	last := time.Time{}
	testwait.For(t, "the reader's tail", func() bool {
		if time.Since(last) > 100*time.Millisecond {
			c.run("send", "cli/counter", "r", "--json", `{"add": 1}`)
			last = time.Now()
		}
		return strings.Contains(out.String(), "cli.out cli/counter/r")
	})
	stop()
}
