package natsbus

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStoreFailureIsReported makes a stream's file store fail to write, as
// a full disk would, and checks that the embedded server reports it once:
// the next message block cannot be created because a directory is in its
// place (no privileges needed, unlike a full or read-only disk).
func TestStoreFailureIsReported(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int32
	failure := make(chan error, 1)
	srv, err := StartServer(ServerOptions{Dir: dir, Port: -1, NoAuth: true, SyncInterval: time.Minute, Logger: testLogger(),
		OnStoreFailure: func(err error) {
			calls.Add(1)
			failure <- err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	_, js := connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A small MaxBytes makes small message blocks.
	if _, err := EnsureStream(ctx, js, StreamSpec{Name: "S", Subjects: []string{"s"}, MaxBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s", []byte("first")); err != nil {
		t.Fatal(err)
	}
	blocks := filepath.Join(dir, "jetstream", "$G", "streams", "S", "msgs")
	if _, err := os.Stat(filepath.Join(blocks, "1.blk")); err != nil {
		t.Fatalf("the stream's first block is not where expected: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(blocks, "2.blk", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 8<<10)
	for i := 0; i < 32 && calls.Load() == 0; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, _ = js.Publish(pctx, "s", payload) // refused once the store fails
		pcancel()
	}
	select {
	case err := <-failure:
		t.Logf("reported: %v", err)
		if !strings.Contains(err.Error(), ".blk") {
			t.Errorf("the failure does not name the block file: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the store failure was not reported")
	}
	// Later failures are not reported again.
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = js.Publish(pctx, "s", payload, jetstream.WithRetryAttempts(0))
	pcancel()
	if err == nil {
		t.Error("a publish to the failed stream succeeded")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("OnStoreFailure called %d times, want 1", n)
	}
}
