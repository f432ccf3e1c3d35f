package cluster

import (
	"context"
	"testing"
	"time"
)

// TestStallWatch ends an upload's context when it makes no progress, and
// only then.
func TestStallWatch(t *testing.T) {
	ctx, w := watchProgress(context.Background(), 20*time.Millisecond)
	<-ctx.Done()
	if !w.fired() {
		t.Fatal("the context ended without progress, but the watch says it did not fire")
	}
	w.stop()

	ctx, w = watchProgress(context.Background(), time.Hour)
	w.progress()
	w.stop()
	if w.fired() || ctx.Err() == nil {
		t.Fatalf("stopped before the limit: fired %v, context %v; want not fired, and the context ended by stop", w.fired(), ctx.Err())
	}
}
