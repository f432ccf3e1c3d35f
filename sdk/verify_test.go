package sdk_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
)

// The documented test vector (docs/security.md): the seed is 32 bytes of
// 0x01.
const (
	vectorPublic = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
	vectorHeader = "t=1700000000,k=34750f98bd59fcfc,v1=vKeNpx1WIhiKvI0OxdWHJYq3CgwiXYi7mm63bM0suRda3e-ycQjykvi1ebtw9w57cM_N10BxETWHOfJXgA2nCQ"
)

func vectorKey() ed25519.PrivateKey {
	seed, _ := hex.DecodeString(strings.Repeat("01", 32))
	return ed25519.NewKeyFromSeed(seed)
}

// signing signs requests as the runtime does, with what it may alter
// first: the body after signing, the path signed, the time.
type signing struct {
	key      ed25519.PrivateKey
	t        time.Time
	path     string // signed instead of the real path, when set
	tamper   bool   // flip a body byte after signing
	header   string // sent instead of a signature, when set
	unsigned bool
}

func (s *signing) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	r := req.Clone(req.Context())
	path := req.URL.EscapedPath()
	if s.path != "" {
		path = s.path
	}
	switch {
	case s.header != "":
		r.Header.Set(sdk.SignatureHeader, s.header)
	case !s.unsigned:
		ts := strconv.FormatInt(s.t.Unix(), 10)
		sig := ed25519.Sign(s.key, []byte("twinflow-v1\n"+ts+"\n"+path+"\n"+string(body)))
		sum := sha256.Sum256(s.key.Public().(ed25519.PublicKey))
		r.Header.Set(sdk.SignatureHeader, "t="+ts+",k="+hex.EncodeToString(sum[:8])+",v1="+base64.RawURLEncoding.EncodeToString(sig))
	}
	if s.tamper {
		body = bytes.Clone(body)
		body[len(body)-1] ^= 1
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return http.DefaultTransport.RoundTrip(r)
}

func signedClient(s *server, sg *signing) twinflowv1connect.FunctionServiceClient {
	return twinflowv1connect.NewFunctionServiceClient(&http.Client{Transport: sg}, s.url)
}

// TestVerifyCalls serves the test functions with the runtime's key, and
// calls them as the runtime would and as others might.
func TestVerifyCalls(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var ran atomic.Int64
	reg := sdk.NewRegistry()
	must(t, reg.Register("test/ping", sdk.FunctionFunc(func(sdk.Context, sdk.Message) error { ran.Add(1); return nil })))
	runtimeKey := vectorKey()
	_, other, _ := ed25519.GenerateKey(nil)
	next, _, _ := ed25519.GenerateKey(nil) // the key of a rotation in progress
	keys, err := sdk.ParseVerifyKeys(vectorPublic + "," + base64.StdEncoding.EncodeToString(next))
	must(t, err)
	srv := startServer(t, reg, sdk.WithVerifyKeys(keys...), sdk.WithClock(func() time.Time { return now }))
	call := func(sg *signing) error {
		batch := &twinflowv1.AddressBatch{Target: addr("test/ping", "p1"), Invocations: []*twinflowv1.Invocation{inv(tv(t, sdk.Int64Type, 1))}}
		_, err := signedClient(srv, sg).Invoke(t.Context(), connect.NewRequest(request(batch)))
		return err
	}
	if err := call(&signing{key: runtimeKey, t: now}); err != nil {
		t.Fatalf("a call signed by the runtime: %v", err)
	}
	if err := call(&signing{key: runtimeKey, t: now.Add(-299 * time.Second)}); err != nil {
		t.Fatalf("a call signed 299 s ago: %v", err)
	}
	if n := ran.Load(); n != 2 {
		t.Fatalf("test/ping ran %d times for the two signed calls", n)
	}
	refused := []struct {
		name string
		sg   *signing
		want string
	}{
		{"unsigned", &signing{unsigned: true}, "missing Twinflow-Signature header"},
		{"garbage", &signing{header: "hello"}, `malformed Twinflow-Signature header: field "hello" is not name=value`},
		{"no signature", &signing{header: "t=1800000000,k=34750f98bd59fcfc"}, "malformed Twinflow-Signature header: want t=<unix seconds>,k=<key id>,v1=<signature>"},
		{"bad time", &signing{header: "t=-5,k=34750f98bd59fcfc,v1=AAAA"}, "t=-5 is not a time in unix seconds"},
		{"bad key id", &signing{header: "t=1800000000,k=XYZ,v1=AAAA"}, "k=XYZ is not a key id"},
		{"bad signature encoding", &signing{header: "t=1800000000,k=34750f98bd59fcfc,v1=AAAA"}, "v1 is not an Ed25519 signature"},
		{"twice", &signing{header: "t=1,t=2,k=34750f98bd59fcfc,v1=AAAA"}, "t appears twice"},
		{"unknown key", &signing{key: other, t: now}, "which this endpoint does not accept (it accepts k=34750f98bd59fcfc, k="},
		{"stale", &signing{key: runtimeKey, t: now.Add(-301 * time.Second)}, "is 5m1s from this endpoint's clock, more than 5m0s"},
		{"future", &signing{key: runtimeKey, t: now.Add(10 * time.Minute)}, "is 10m0s from this endpoint's clock"},
		{"tampered body", &signing{key: runtimeKey, t: now, tamper: true}, "the signature does not verify with key k=34750f98bd59fcfc: the call was altered"},
		{"another path", &signing{key: runtimeKey, t: now, path: "/other/twinflow.v1.FunctionService/Invoke"}, "the signature does not verify"},
	}
	for _, tt := range refused {
		err := call(tt.sg)
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want unauthenticated: ...%s...", tt.name, err, tt.want)
		}
	}
	if n := ran.Load(); n != 2 {
		t.Fatalf("test/ping ran %d times; the refused calls ran it", n)
	}

	// Without Connect, the refusal is plain HTTP.
	resp, err := http.Post(srv.url+sdk.HandlerPath+"Invoke", "text/plain", strings.NewReader("x"))
	must(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "missing Twinflow-Signature") {
		t.Errorf("plain POST: %d %s", resp.StatusCode, b)
	}
}

// TestVerifyVector checks the documented test vector against the
// verifier: the same bytes, signed at the same time, are accepted.
func TestVerifyVector(t *testing.T) {
	keys, err := sdk.ParseVerifyKeys(vectorPublic)
	must(t, err)
	h := sdk.Handler(sdk.NewRegistry(), sdk.WithVerifyKeys(keys...), sdk.WithClock(func() time.Time { return time.Unix(1700000000, 0) }))
	req, _ := http.NewRequest("POST", "http://x/twinflow.v1.FunctionService/Invoke", strings.NewReader("\x0a\x02hi"))
	req.RequestURI = "/twinflow.v1.FunctionService/Invoke"
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set(sdk.SignatureHeader, vectorHeader)
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, req)
	// The body is no InvokeRequest the handler accepts, but it got past
	// the signature: the error is about the request, not the caller.
	if rec.status == http.StatusUnauthorized {
		t.Fatalf("the test vector was refused: %d %s", rec.status, rec.body.String())
	}
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) { r.status = s }

func TestParseVerifyKeys(t *testing.T) {
	for _, s := range []string{"", "x", vectorPublic + ",", "AAAA", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := sdk.ParseVerifyKeys(s); err == nil || !strings.Contains(err.Error(), "is not an Ed25519 public key") {
			t.Errorf("ParseVerifyKeys(%q) = %v", s, err)
		}
	}
	t.Setenv(sdk.VerifyKeyEnv, " "+vectorPublic+" , "+vectorPublic+" ")
	keys, err := sdk.VerifyKeysFromEnv()
	if err != nil || len(keys) != 2 {
		t.Fatalf("VerifyKeysFromEnv = %v, %v", keys, err)
	}
	t.Setenv(sdk.VerifyKeyEnv, "")
	if keys, err := sdk.VerifyKeysFromEnv(); keys != nil || err != nil {
		t.Fatalf("VerifyKeysFromEnv with the variable empty = %v, %v", keys, err)
	}
	t.Setenv(sdk.VerifyKeyEnv, "nope")
	if _, err := sdk.VerifyFromEnv(); err == nil || !strings.Contains(err.Error(), sdk.VerifyKeyEnv) {
		t.Fatalf("VerifyFromEnv with a bad key: %v", err)
	}
}

// TestLocalRuntimeKeys: the endpoint may start before the runtime; calls
// are refused until the runtime's pointer names its key, and a new key in
// the pointer is picked up.
func TestLocalRuntimeKeys(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv(sdk.VerifyKeyEnv, "")
	now := time.Now()
	f := newTestFunctions(t)
	opt, err := sdk.VerifyFromEnv()
	must(t, err)
	srv := startServer(t, f.reg, opt)
	call := func(key ed25519.PrivateKey) error {
		_, err := signedClient(srv, &signing{key: key, t: now}).Invoke(t.Context(), connect.NewRequest(request(counterBatch("c1", nil, inv(tv(t, sdk.Int64Type, 1))))))
		return err
	}
	if err := call(vectorKey()); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "no runtime has started on this machine") {
		t.Fatalf("a call before any runtime: %v", err)
	}
	written := now
	pointer := func(keys ...string) {
		must(t, os.MkdirAll(filepath.Join(dir, "twinflow"), 0o700))
		b := `{"version":1,"signing_keys":["` + strings.Join(keys, `","`) + `"]}`
		file := filepath.Join(dir, "twinflow", "current")
		must(t, os.WriteFile(file, []byte(b), 0o600))
		// Each pointer gets its own modification time, as a runtime
		// started later would give it.
		written = written.Add(time.Minute)
		must(t, os.Chtimes(file, written, written))
	}
	pointer(vectorPublic)
	if err := call(vectorKey()); err != nil {
		t.Fatalf("a call signed with the local runtime's key: %v", err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	if err := call(priv); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("a call signed with another key: %v", err)
	}
	// A new runtime, with another key: its pointer replaces the last.
	pointer(base64.StdEncoding.EncodeToString(pub))
	if err := call(priv); err != nil {
		t.Fatalf("a call signed with the new runtime's key: %v", err)
	}
}
