package runtime_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/twinflow/twinflow/internal/testcert"
	"github.com/twinflow/twinflow/internal/testwait"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// attacker is a NATS connection whose permission violations the test
// reads: the server refuses a publish or a subscription asynchronously.
type attacker struct {
	t      *testing.T
	nc     *nats.Conn
	errors chan error
}

func dial(t *testing.T, url, seedFile, inboxPrefix string) *attacker {
	t.Helper()
	a := &attacker{t: t, errors: make(chan error, 64)}
	opts := []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { a.errors <- err })}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	auth, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(opts, auth)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	a.nc = nc
	return a
}

// refused waits for the server's refusal of what ("Publish to \"x\"" or
// "Subscription to \"x\"").
func (a *attacker) refused(what string) {
	a.t.Helper()
	select {
	case err := <-a.errors:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), what) {
			a.t.Fatalf("got %v, want a permission violation for %s", err, what)
		}
	case <-time.After(10 * time.Second):
		a.t.Fatalf("%s was not refused", what)
	}
}

func (a *attacker) publish(msg *nats.Msg) {
	a.t.Helper()
	if err := a.nc.PublishMsg(msg); err != nil {
		a.t.Fatal(err)
	}
	a.refused(`Publish to "` + msg.Subject + `"`)
}

func (a *attacker) subscribe(subject string) {
	a.t.Helper()
	if _, err := a.nc.SubscribeSync(subject); err != nil {
		a.t.Fatal(err)
	}
	a.refused(`Subscription to "` + subject + `"`)
}

// securedConfig is baseConfig with an ingress, an egress and a user
// "sensors" that may publish only to the ingress.
func securedConfig(t *testing.T, url string) runtime.Config {
	cfg := ingressConfig(t, url, bySubject)
	cfg.Module.Users = []spec.User{{Name: "sensors", Ingresses: []string{bySubject.Name}}}
	return cfg
}

// TestNATSRefusesStrangers: a client without credentials, or with an nkey
// the server does not know, is refused with an authorization error.
func TestNATSRefusesStrangers(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	stranger, _ := nkeys.CreateUser()
	seed, _ := stranger.Seed()
	file := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(file, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, creds := range []string{"", file} {
		for range 2 {
			_, _, err := natsbus.Connect(natsbus.ConnOptions{URL: h.e.NATSURL(), CredsFile: creds, Logger: testLogger(t)})
			var ce *natsbus.ConnectError
			if !errors.As(err, &ce) || !ce.Unauthorized() {
				t.Fatalf("connect with credentials %q: %v; want an authorization error", creds, err)
			}
		}
	}
}

// TestClientIdentityLeastPrivilege repeats, as the client identity, the
// attacks that used to work on an open NATS server: each is refused by the
// server with a permission violation naming the subject, and nothing it
// aimed at changed.
func TestClientIdentityLeastPrivilege(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	info := h.access()
	a := dial(t, info.NATSURL, info.NATSCreds, info.NATSInboxPrefix)
	ctx := context.Background()
	for range 2 { // each attack, twice
		// The JetStream API: delete, purge, create streams, create a
		// consumer (a push consumer could deliver stored records to any
		// subject).
		for _, subject := range []string{
			"$JS.API.STREAM.DELETE." + runtime.DeadLetterStream,
			"$JS.API.STREAM.DELETE." + runtime.DirectStream,
			"$JS.API.STREAM.PURGE.TWINFLOW_EGRESS_out",
			"$JS.API.STREAM.CREATE.EVIL",
			"$JS.API.CONSUMER.CREATE." + runtime.DeadLetterStream,
			"$JS.API.CONSUMER.CREATE.TWINFLOW_EGRESS_out.evil.test.out",
			"$JS.API.STREAM.INFO." + runtime.DirectStream,
			"$SYS.REQ.SERVER.PING",
		} {
			a.publish(&nats.Msg{Subject: subject, Data: []byte("{}")})
		}
		// Egress and dead-letter streams, with message ids the runtime
		// will use (message-id poisoning), inboxes, the runtime's own.
		for _, subject := range []string{"test.out", "test.out.key", "twinflow.dlq.ingress", "twinflow.dlq.function",
			"_INBOX_client.x", "_INBOX.x", "_INBOX_sensors.x", runtime.RuntimeInboxPrefix + ".x"} {
			m := nats.NewMsg(subject)
			m.Header.Set(jetstream.MsgIDHeader, "ingress-"+runtime.DirectStream+"-1")
			a.publish(m)
		}
		// Reading everything, the ingress streams, another's inbox.
		for _, subject := range []string{">", "*.>", "twinflow.in.>", "sensors.*.reading", "_INBOX.>", "_INBOX_sensors.>", "$JS.>"} {
			a.subscribe(subject)
		}
	}
	// The streams are all there, and hold nothing forged.
	for _, name := range []string{runtime.DeadLetterStream, runtime.DirectStream, "TWINFLOW_EGRESS_out"} {
		s, err := h.ops.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if info, err := s.Info(ctx); err != nil || info.State.Msgs != 0 {
			t.Errorf("stream %s holds %v messages (err %v)", name, info.State.Msgs, err)
		}
	}
	if _, err := h.ops.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream EVIL: %v", err)
	}
	// The JetStream client reports the refusals as errors too.
	if err := h.js.DeleteStream(ctx, runtime.DeadLetterStream); err == nil {
		t.Error("the client identity deleted the dead-letter stream")
	}
	// A real dead letter is stored under the id the attacker tried to
	// take first.
	h.publish(router.DirectSubjectPrefix+"test.sum.x", nil, []byte("no typename"))
	testwait.For(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 })

	// What the client may do: publish to ingresses, read egresses and dead
	// letters.
	h.publish("sensors.s-1.reading", nil, readingJSON("s-1", 5))
	testwait.For(t, "the sum", func() bool { return h.stateInt("test/sum", "s-1", "total") == 5 })
	s, err := h.js.Stream(ctx, runtime.DeadLetterStream)
	if err != nil {
		t.Fatalf("the client reading the dead-letter stream's info: %v", err)
	}
	if m, err := s.GetMsg(ctx, 1); err != nil || m.Subject != router.DeadLetterSubject {
		t.Fatalf("the client reading a dead letter: %v, %v", m, err)
	}
	select {
	case err := <-a.errors:
		t.Fatalf("unexpected refusal: %v", err)
	default:
	}
}

// TestUserIdentity: a module spec user may publish to its ingress only,
// and subscribe to its own inbox only.
func TestUserIdentity(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	seed := filepath.Join(h.cfg.DataDir, "secrets", "users", "sensors.nk")
	a := dial(t, h.e.NATSURL(), seed, runtime.InboxPrefix("sensors"))
	if err := a.nc.Publish("sensors.s-2.reading", readingJSON("s-2", 7)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the sum", func() bool { return h.stateInt("test/sum", "s-2", "total") == 7 })
	a.publish(nats.NewMsg(router.DirectSubjectPrefix + "test.sum.s-2"))
	a.publish(nats.NewMsg("test.out"))
	a.subscribe("test.out")
	a.subscribe("_INBOX_client.>")
	if _, err := a.nc.SubscribeSync(a.nc.NewInbox()); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.errors:
		t.Fatalf("the user's own inbox: %v", err)
	default:
	}
}

// TestForgedReplyNeverReachesTheRequester: another identity can neither
// read the client's inboxes nor answer on them, nor can the client
// identity itself; the requester gets the function's answer.
func TestForgedReplyNeverReachesTheRequester(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := securedConfig(t, ep.url())
	cfg.Module.Users = append(cfg.Module.Users, spec.User{Name: "intruder", Ingresses: []string{router.DirectIngress}})
	h := start(t, cfg)
	intruder := dial(t, h.e.NATSURL(), filepath.Join(h.cfg.DataDir, "secrets", "users", "intruder.nk"), runtime.InboxPrefix("intruder"))
	client := dial(t, h.e.NATSURL(), h.access().NATSCreds, runtime.ClientInboxPrefix)
	subject, _ := router.DirectSubject("test/echo", "e1")
	v, _ := sdk.Encode(sdk.StringType, "ping")
	for i := range 3 {
		intruder.subscribe(">")
		intruder.subscribe("_INBOX_client.>")
		intruder.subscribe("_INBOX.>")
		forged := nats.NewMsg(runtime.ClientInboxPrefix + ".anything")
		forged.Header.Set(router.TypenameHeader, sdk.StringType.Typename())
		forged.Data = []byte(`"forged"`)
		intruder.publish(forged)
		// The client identity may read its inboxes, but not answer on
		// them.
		if _, err := client.nc.Subscribe(runtime.ClientInboxPrefix+".>", func(m *nats.Msg) {
			f := nats.NewMsg(m.Subject)
			f.Data = []byte(`"forged"`)
			f.Header.Set(router.TypenameHeader, sdk.StringType.Typename())
			_ = client.nc.PublishMsg(f)
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reply, err := natsbus.Request(ctx, h.js, subject, nats.Header{router.TypenameHeader: {v.Typename}}, v.Bytes)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if string(reply.Data) != `"echo:e1:ping"` {
			t.Fatalf("request %d got %q, want the function's answer", i, reply.Data)
		}
		client.refused(`Publish to "` + runtime.ClientInboxPrefix + ".")
	}
}

// adminCall calls GetState with client c.
func adminCall(h *harness, c *http.Client) error {
	_, err := twinflowv1connect.NewAdminServiceClient(c, h.e.AdminURL()).GetState(context.Background(),
		connect.NewRequest(&twinflowv1.GetStateRequest{Address: &twinflowv1.Address{Type: "test/sum", Id: "a"}}))
	return err
}

// bearer is an HTTP client that sends token.
func bearer(token string) *http.Client {
	return &http.Client{Transport: &tokenTransport{token}}
}

type tokenTransport struct{ token string }

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAdminAPIToken: without the token, or with another, the admin API
// answers unauthenticated; with it, it works; a rotated token takes effect
// at once. The probes and, on loopback, /metrics stay open.
func TestAdminAPIToken(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	for range 2 {
		err := adminCall(h, http.DefaultClient)
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "needs its token") {
			t.Fatalf("without a token: %v", err)
		}
		err = adminCall(h, bearer("guess"))
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "refused the token") {
			t.Fatalf("with a wrong token: %v", err)
		}
	}
	tokenFile := h.access().AdminTokenFile
	token, err := secrets.ReadAdminToken(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := adminCall(h, bearer(token)); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 200, "/signing-keys": 200, "/twinflow.v1.AdminService/ListCheckpoints": 401} {
		resp, err := http.Post(h.e.AdminURL()+path, "text/plain", nil)
		if path != "/twinflow.v1.AdminService/ListCheckpoints" {
			resp, err = http.Get(h.e.AdminURL() + path)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s without a token: %d %s, want %d", path, resp.StatusCode, body, want)
		}
		if path == "/signing-keys" && strings.TrimSpace(string(body)) != h.e.SigningKeys()[0] {
			t.Errorf("/signing-keys = %q, want %q", body, h.e.SigningKeys()[0])
		}
	}
	if err := secrets.RotateAdminToken(h.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := adminCall(h, bearer(token)); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("the old token after a rotation: %v", err)
	}
	hc, err := h.access().AdminHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := adminCall(h, hc); err != nil {
		t.Fatalf("the new token: %v", err)
	}
}

// TestMetricsToken: /metrics may require the token.
func TestMetricsToken(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := securedConfig(t, ep.url())
	cfg.MetricsAuth = runtime.MetricsAuthToken
	h := start(t, cfg)
	resp, err := http.Get(h.e.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: %d", resp.StatusCode)
	}
	hc, _ := h.access().AdminHTTPClient()
	resp, err = hc.Get(h.e.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with the token: %d", resp.StatusCode)
	}
}

// TestAdminRequestSize: a body over the limit is refused, with or without
// a declared length, before it is read into memory.
func TestAdminRequestSize(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	hc, _ := h.access().AdminHTTPClient()
	big := &twinflowv1.GetStateRequest{Address: &twinflowv1.Address{Type: "test/sum", Id: strings.Repeat("x", 2<<20)}}
	for range 2 {
		_, err := twinflowv1connect.NewAdminServiceClient(hc, h.e.AdminURL()).GetState(context.Background(), connect.NewRequest(big))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "exceeds the admin API's limit of 1048576 bytes") {
			t.Fatalf("a 2 MiB request: %v", err)
		}
	}
	// Without a length: the body is cut off at the limit.
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 64 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", h.e.AdminURL()+"/twinflow.v1.AdminService/GetState", pr)
	req.Header.Set("Content-Type", "application/proto")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pr.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "resource_exhausted") {
		t.Fatalf("a 4 MiB chunked request: %d %s", resp.StatusCode, body)
	}
}

// TestSavepointDir: the admin API writes savepoints only under the
// savepoint dir, owner-only.
func TestSavepointDir(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	h := start(t, securedConfig(t, ep.url()))
	outside := t.TempDir()
	for _, dir := range []string{filepath.Join(outside, "sp"), "../sp", "a/../../sp", filepath.Join(h.cfg.DataDir, "savepoints"), filepath.Join(h.cfg.DataDir, "savepoints", "..", "state")} {
		_, err := h.admin.Stop(context.Background(), connect.NewRequest(&twinflowv1.StopRequest{SavepointDir: dir}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("savepoint into %s: %v", dir, err)
		}
		if !strings.Contains(err.Error(), "outside") && !strings.Contains(err.Error(), `contains ".."`) {
			t.Errorf("savepoint into %s: %v", dir, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("something was written outside: %v", entries)
	}
	h.publish("sensors.s-1.reading", nil, readingJSON("s-1", 1))
	testwait.For(t, "the sum", func() bool { return h.stateInt("test/sum", "s-1", "total") == 1 })
	resp, err := h.admin.Stop(context.Background(), connect.NewRequest(&twinflowv1.StopRequest{SavepointDir: "nightly/one"}))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(h.cfg.DataDir, "savepoints", "nightly", "one")
	if got := resp.Msg.GetCheckpoint().GetSavepointDir(); got != want {
		t.Fatalf("savepoint written to %s, want %s", got, want)
	}
	<-h.e.Done()
	err = filepath.WalkDir(filepath.Join(h.cfg.DataDir, "savepoints"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if want := os.FileMode(0o600); d.IsDir() {
			want = 0o700
			if fi.Mode().Perm() != want {
				t.Errorf("%s mode %04o, want %04o", path, fi.Mode().Perm(), want)
			}
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAdminBeyondLoopback: the admin API refuses to listen beyond loopback
// over plain HTTP unless told to; over TLS, a client certificate of the
// configured CA authenticates as the token does.
func TestAdminBeyondLoopback(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := securedConfig(t, ep.url())
	cfg.AdminAddr = "0.0.0.0:0"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-admin-insecure") {
		t.Fatalf("plain HTTP on every interface: %v", err)
	}
	cfg.AdminInsecure = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with AdminInsecure: %v", err)
	}

	ca := testcert.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	cfg = securedConfig(t, ep.url())
	cfg.AdminAddr = "0.0.0.0:0"
	cfg.AdminTLSCertFile, cfg.AdminTLSKeyFile, cfg.AdminClientCAFile = server.CertFile, server.KeyFile, ca.File
	h := start(t, cfg)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(h.e.AdminURL(), "https://"))
	url := "https://127.0.0.1:" + port
	call := func(c *http.Client) error {
		_, err := twinflowv1connect.NewAdminServiceClient(c, url).ListCheckpoints(context.Background(), connect.NewRequest(&twinflowv1.ListCheckpointsRequest{}))
		return err
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "operator").TLS(t)}}}}
	if err := call(withCert); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if err := call(noCert); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("without a certificate or token: %v", err)
	}
	hc, err := h.access().AdminHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := call(hc); err != nil {
		t.Fatalf("with the token over TLS (the runtime file's CA): %v", err)
	}
	// Metrics beyond loopback need the token.
	resp, err := noCert.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics beyond loopback without the token: %d", resp.StatusCode)
	}
}

// TestEmbeddedNATSTLS: with a certificate the embedded server accepts only
// TLS; beyond loopback it requires one.
func TestEmbeddedNATSTLS(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := securedConfig(t, ep.url())
	cfg.NATSHost = "0.0.0.0"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-nats-tls-cert") {
		t.Fatalf("NATS on every interface without TLS: %v", err)
	}
	ca := testcert.NewCA(t)
	server := ca.Server(t, "localhost", "127.0.0.1")
	cfg.NATSTLSCertFile, cfg.NATSTLSKeyFile = server.CertFile, server.KeyFile
	h := start(t, cfg)
	if !strings.HasPrefix(h.e.Access().NATSURL, "tls://127.0.0.1:") {
		t.Fatalf("NATS URL %s", h.e.Access().NATSURL)
	}
	h.publish("sensors.s-1.reading", nil, readingJSON("s-1", 3))
	testwait.For(t, "the sum", func() bool { return h.stateInt("test/sum", "s-1", "total") == 3 })
	plain := strings.Replace(h.e.Access().NATSURL, "tls://", "nats://", 1)
	_, _, err := natsbus.Connect(natsbus.ConnOptions{URL: plain, CredsFile: h.e.Access().NATSCreds, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("a plain connection to a TLS server succeeded")
	}
}

// TestNATSPortTaken: an explicit port that is taken is an error naming it.
func TestNATSPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cfg := baseConfig(t, "http://127.0.0.1:1")
	cfg.NATSPort = port
	_, err = runtime.Start(context.Background(), cfg)
	if !errors.Is(err, natsbus.ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("start on a taken port: %v", err)
	}
}

// TestSignedFunctionCalls: an endpoint given the runtime's public key
// accepts the runtime's calls, and refuses unsigned ones and signed ones
// whose body was altered.
func TestSignedFunctionCalls(t *testing.T) {
	dataDir := t.TempDir()
	keys, err := secrets.Ensure(dataDir, []string{"sensors"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sdk.ParseVerifyKeys(secrets.EncodePublicKey(keys.Signing.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lastHeader http.Header
	var lastPath string
	var lastBody []byte
	h := sdk.Handler(ingressRegistry(t), sdk.WithVerifyKeys(pub...))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		lastHeader, lastPath, lastBody = r.Header.Clone(), r.URL.Path, body
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := securedConfig(t, srv.URL)
	cfg.DataDir = dataDir
	hh := start(t, cfg)
	hh.publish("sensors.s-1.reading", nil, readingJSON("s-1", 4))
	testwait.For(t, "the runtime's signed call to change the state", func() bool { return hh.stateInt("test/sum", "s-1", "total") == 4 })
	mu.Lock()
	header, path, body := lastHeader, lastPath, lastBody
	mu.Unlock()

	unsigned := twinflowv1connect.NewFunctionServiceClient(http.DefaultClient, srv.URL)
	forged := &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
		Batches: []*twinflowv1.AddressBatch{{Target: &twinflowv1.Address{Type: "test/sum", Id: "s-1"}}}}
	for range 2 {
		_, err := unsigned.Invoke(context.Background(), connect.NewRequest(forged))
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "missing Twinflow-Signature") {
			t.Fatalf("an unsigned call: %v", err)
		}
	}
	replay := func(body []byte) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+path, bytes.NewReader(body))
		for _, k := range []string{"Content-Type", "Connect-Protocol-Version", "Twinflow-Signature"} {
			req.Header.Set(k, header.Get(k))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	altered := bytes.Clone(body)
	altered[len(altered)-1] ^= 0x01
	for range 2 {
		if code, msg := replay(altered); code != http.StatusUnauthorized || !strings.Contains(msg, "does not verify") {
			t.Fatalf("a signed call with its body altered: %d %s", code, msg)
		}
	}
	// The same bytes as signed pass: what failed was the alteration.
	if code, msg := replay(body); code != http.StatusOK {
		t.Fatalf("the runtime's call, unaltered: %d %s", code, msg)
	}
}
