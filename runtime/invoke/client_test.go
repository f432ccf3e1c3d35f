package invoke

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

type echo struct{}

func (echo) Invoke(_ context.Context, req *connect.Request[twinflowv1.InvokeRequest]) (*connect.Response[twinflowv1.InvokeResponse], error) {
	resp := &twinflowv1.InvokeResponse{ProtocolVersion: req.Msg.GetProtocolVersion()}
	for _, b := range req.Msg.GetBatches() {
		resp.Results = append(resp.Results, &twinflowv1.AddressResult{Target: b.GetTarget()})
	}
	return connect.NewResponse(resp), nil
}

// TestNoCompression checks that calls offer no compression, so that even a
// large response comes back uncompressed.
func TestNoCompression(t *testing.T) {
	_, h := twinflowv1connect.NewFunctionServiceHandler(echo{}, connect.WithCompressMinBytes(0))
	var accept []string
	var encoding string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept = append(accept, r.Header.Values("Accept-Encoding")...)
		accept = append(accept, r.Header.Values("Connect-Accept-Encoding")...)
		h.ServeHTTP(w, r)
		encoding = w.Header().Get("Content-Encoding")
	}))
	defer srv.Close()
	c := New(Options{MaxConnsPerHost: 4})
	defer c.Close()
	req := &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1}
	for i := range 1000 {
		req.Batches = append(req.Batches, &twinflowv1.AddressBatch{Target: &twinflowv1.Address{Type: "t/x", Id: strings.Repeat("x", 100) + string(rune('a'+i%26))}})
	}
	resp, err := c.Invoke(context.Background(), srv.URL, 10*time.Second, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != 1000 {
		t.Fatalf("%d results", len(resp.GetResults()))
	}
	for _, a := range accept {
		if strings.Contains(a, "gzip") {
			t.Errorf("request offers compression: %q", a)
		}
	}
	if encoding != "" {
		t.Errorf("response encoded with %q", encoding)
	}
}

// BenchmarkInvoke measures calls through the Client to an endpoint that
// answers at once, over loopback HTTP/1.1, with 1 and 100 addresses per
// call, unsigned and signed (as the runtime calls).
//
//	go test -run '^$' -bench Invoke -benchmem ./runtime/invoke
func BenchmarkInvoke(b *testing.B) {
	_, h := twinflowv1connect.NewFunctionServiceHandler(echo{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		n   int
		key ed25519.PrivateKey
	}{{1, nil}, {1, testKey()}, {100, nil}, {100, testKey()}} {
		n := c.n
		b.Run(fmt.Sprintf("addresses=%d/signed=%v", n, c.key != nil), func(b *testing.B) {
			c := New(Options{MaxConnsPerHost: 4, SigningKey: c.key})
			defer c.Close()
			req := &twinflowv1.InvokeRequest{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1}
			for i := range n {
				req.Batches = append(req.Batches, &twinflowv1.AddressBatch{
					Target:      &twinflowv1.Address{Type: "t/x", Id: fmt.Sprint("id-", i)},
					State:       []*twinflowv1.StateValue{{Name: "count", Value: &twinflowv1.TypedValue{Typename: "twinflow/int64", Value: []byte("12345")}}},
					Invocations: []*twinflowv1.Invocation{{Argument: &twinflowv1.TypedValue{Typename: "t/m", Value: make([]byte, 100)}}},
				})
			}
			url := srv.URL
			for b.Loop() {
				if _, err := c.Invoke(context.Background(), url, 10*time.Second, req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}
