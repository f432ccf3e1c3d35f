package invoke

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testcert"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// testKey is the key of the documented test vector: the seed is 32 bytes
// of 0x01.
func testKey() ed25519.PrivateKey {
	seed, _ := hex.DecodeString(strings.Repeat("01", 32))
	return ed25519.NewKeyFromSeed(seed)
}

// TestSignVector pins the scheme with the vector of docs/security.md,
// which independent implementations (Python's cryptography, Node's crypto)
// reproduce.
func TestSignVector(t *testing.T) {
	got := Sign(testKey(), time.Unix(1700000000, 0), "/twinflow.v1.FunctionService/Invoke", []byte("\x0a\x02hi"))
	want := "t=1700000000,k=34750f98bd59fcfc,v1=vKeNpx1WIhiKvI0OxdWHJYq3CgwiXYi7mm63bM0suRda3e-ycQjykvi1ebtw9w57cM_N10BxETWHOfJXgA2nCQ"
	if got != want {
		t.Fatalf("Sign =\n%s\nwant\n%s", got, want)
	}
}

// checkSignature verifies a received request as an endpoint would.
func checkSignature(t *testing.T, pub ed25519.PublicKey, r *http.Request, body []byte, now time.Time) {
	t.Helper()
	fields := map[string]string{}
	for _, kv := range strings.Split(r.Header.Get(SignatureHeader), ",") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	ts, err := strconv.ParseInt(fields["t"], 10, 64)
	if err != nil || ts != now.Unix() {
		t.Errorf("signature time %q, want %d", fields["t"], now.Unix())
	}
	if fields["k"] != KeyID(pub) {
		t.Errorf("key id %q, want %q", fields["k"], KeyID(pub))
	}
	sig, err := base64.RawURLEncoding.DecodeString(fields["v1"])
	if err != nil {
		t.Fatalf("signature %q: %v", fields["v1"], err)
	}
	msg := "twinflow-v1\n" + fields["t"] + "\n" + r.URL.EscapedPath() + "\n" + string(body)
	if !ed25519.Verify(pub, []byte(msg), sig) {
		t.Errorf("the signature does not verify over the received path %s and %d body bytes", r.URL.Path, len(body))
	}
}

// TestSignedCalls: every call carries a signature over the exact path and
// body the endpoint receives, including a large one.
func TestSignedCalls(t *testing.T) {
	key := testKey()
	now := time.Unix(1_800_000_000, 0)
	_, h := twinflowv1connect.NewFunctionServiceHandler(echo{})
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		checkSignature(t, key.Public().(ed25519.PublicKey), r, body, now)
		calls++
		r.Body = io.NopCloser(bytes.NewReader(body))
		http.StripPrefix("/fn", h).ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := New(Options{SigningKey: key, Now: func() time.Time { return now }})
	defer c.Close()
	for _, n := range []int{1, 5000} {
		req := &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1}
		for i := range n {
			req.Batches = append(req.Batches, &twinflowv1.AddressBatch{Target: &twinflowv1.Address{Type: "t/x", Id: strconv.Itoa(i)}})
		}
		resp, err := c.Invoke(context.Background(), srv.URL+"/fn", 10*time.Second, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != n {
			t.Fatalf("%d results for %d batches", len(resp.GetResults()), n)
		}
	}
	if calls != 2 {
		t.Fatalf("%d calls reached the endpoint, want 2", calls)
	}
}

// TestEndpointTLS calls an endpoint that requires a client certificate,
// with the endpoint's CA and the runtime's certificate; without them the
// call fails.
func TestEndpointTLS(t *testing.T) {
	ca := testcert.NewCA(t)
	_, h := twinflowv1connect.NewFunctionServiceHandler(echo{})
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1").TLS(t)},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	srv.StartTLS()
	defer srv.Close()
	req := &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
		Batches: []*twinflowv1.AddressBatch{{Target: &twinflowv1.Address{Type: "t/x", Id: "1"}}}}
	url := srv.URL

	good := New(Options{TLS: map[string]*tls.Config{srv.URL: {RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "runtime").TLS(t)}}}})
	defer good.Close()
	if _, err := good.Invoke(context.Background(), url, 10*time.Second, req); err != nil {
		t.Fatalf("call with the CA and a client certificate: %v", err)
	}
	noCert := New(Options{TLS: map[string]*tls.Config{srv.URL: {RootCAs: ca.Pool()}}})
	defer noCert.Close()
	if _, err := noCert.Invoke(context.Background(), url, 10*time.Second, req); err == nil {
		t.Fatal("call without a client certificate succeeded")
	}
	noCA := New(Options{})
	defer noCA.Close()
	if _, err := noCA.Invoke(context.Background(), url, 10*time.Second, req); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("call without the endpoint's CA: %v", err)
	}
}

// BenchmarkSign measures signing one call's body, of a small call and of a
// 100-address batch's size.
//
//	go test -run '^$' -bench Sign -benchmem ./runtime/invoke
func BenchmarkSign(b *testing.B) {
	key := testKey()
	for _, size := range []int{200, 20 << 10} {
		body := make([]byte, size)
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				Sign(key, time.Unix(1_800_000_000, 0), "/twinflow.v1.FunctionService/Invoke", body)
			}
		})
	}
}
