package sdk_test

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/sdk"
)

// BenchmarkInvoke measures whole calls over loopback HTTP/1.1 with a
// connect-go client (which asks for gzip), for batches of 1 and 100
// addresses, with gzip for every response versus the default threshold,
// and with batches run one by one versus concurrently.
//
//	go test -run '^$' -bench Invoke -benchmem ./sdk
func BenchmarkInvoke(b *testing.B) {
	for _, addresses := range []int{1, 100} {
		var batches []*twinflowv1.AddressBatch
		for i := range addresses {
			batches = append(batches, counterBatch(fmt.Sprint(i), tv(b, sdk.Int64Type, int64(i)), inv(tv(b, sdk.Int64Type, 1))))
		}
		req := request(batches...)
		for _, cfg := range []struct {
			name string
			opts []sdk.HandlerOption
		}{
			{"gzip-always", []sdk.HandlerOption{sdk.WithCompressMinBytes(0)}},
			{"default", nil},
			{"sequential", []sdk.HandlerOption{sdk.WithBatchConcurrency(1)}},
		} {
			if addresses == 1 && cfg.name == "sequential" {
				continue // one batch always runs inline
			}
			b.Run(fmt.Sprintf("addresses=%d/%s", addresses, cfg.name), func(b *testing.B) {
				f := newTestFunctions(b)
				c := startServer(b, f.reg, cfg.opts...).client(b)
				resp, err := c.Invoke(b.Context(), connect.NewRequest(req))
				must(b, err)
				size := proto.Size(resp.Msg)
				for b.Loop() {
					if _, err := c.Invoke(b.Context(), connect.NewRequest(req)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(size), "resp-bytes")
				b.ReportMetric(float64(addresses)*float64(b.N)/b.Elapsed().Seconds(), "addresses/s")
			})
		}
	}
}
