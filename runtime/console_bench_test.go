package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// BenchmarkListAddressesRPC lists pages of 50 addresses through the admin
// API of a runtime whose store holds a million addresses of one type, as
// the console's explorer does.
func BenchmarkListAddressesRPC(b *testing.B) {
	const total, k = 1_000_000, 128
	dir := b.TempDir()
	st, err := state.Open(filepath.Join(dir, "state"), state.Options{KeyGroups: k})
	if err != nil {
		b.Fatal(err)
	}
	seeded := time.Now()
	for lo := 0; lo < total; lo += 100_000 {
		o := state.NewOverlay()
		v := state.NewView(st, o)
		for i := lo; i < lo+100_000; i++ {
			a := state.Address{Type: "dc/server", ID: fmt.Sprintf("srv-%07d", i)}
			kg := keygroup.Of(a.ID, k)
			state.PutValue(o, kg, a, "health", state.Value{Typename: "twinflow/json", Data: []byte(`{"ok":true}`)})
			if _, err := state.PutIndex(v, o, kg, a); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := st.Commit([]*state.Overlay{o}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d addresses in %s", total, time.Since(seeded).Round(time.Millisecond))
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	e, err := runtime.Start(context.Background(), runtime.Config{
		DataDir: dir, NATSPort: -1, NATSSyncInterval: time.Minute, AdminAddr: "127.0.0.1:0",
		Shards: 2, KeyGroups: k, Memory: runtime.Memory{Total: 512 << 20}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Kill()
	hc, err := e.Access().AdminHTTPClient()
	if err != nil {
		b.Fatal(err)
	}
	admin := twinflowv1connect.NewAdminServiceClient(hc, e.AdminURL())
	for _, c := range []struct {
		name string
		req  *twinflowv1.ListAddressesRequest
	}{
		{"first-page", &twinflowv1.ListAddressesRequest{Type: "dc/server", Limit: 50}},
		{"middle-page", &twinflowv1.ListAddressesRequest{Type: "dc/server", Limit: 50, After: "srv-0500000"}},
		{"prefix", &twinflowv1.ListAddressesRequest{Type: "dc/server", Limit: 50, Prefix: "srv-07"}},
		{"with-state", &twinflowv1.ListAddressesRequest{Type: "dc/server", Limit: 50, StateNames: []string{"health"}}},
		{"count-only", &twinflowv1.ListAddressesRequest{Type: "dc/server", Limit: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := admin.ListAddresses(context.Background(), connect.NewRequest(c.req))
				if err != nil {
					b.Fatal(err)
				}
				if resp.Msg.GetTotal() != total || len(resp.Msg.GetAddresses()) != int(c.req.GetLimit()) {
					b.Fatalf("total %d, page of %d", resp.Msg.GetTotal(), len(resp.Msg.GetAddresses()))
				}
			}
		})
	}
}
