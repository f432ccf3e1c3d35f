package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestReplicatedStreamSurvivesKilledLeader shows what the package is for: an
// R3 stream keeps its acknowledged messages and accepts new ones when the
// server leading it is killed, and the killed server catches up after its
// restart.
func TestReplicatedStreamSurvivesKilledLeader(t *testing.T) {
	c := Start(t)
	_, js := c.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		for range n {
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "s.x", []byte("m"))
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish: %v", err)
				}
			}
		}
	}
	publish(10)
	leader := c.StreamLeader(js, "S")
	c.Kill(leader)
	publish(10) // retried until a new leader is elected among the two left
	if again := c.StreamLeader(js, "S"); again == leader {
		t.Fatalf("server %d still leads the stream after it was killed", leader)
	}
	c.Restart(leader)

	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n < 20 {
		t.Fatalf("stream holds %d messages, want at least the 20 acknowledged", n)
	}
	// The restarted server catches up with the others.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		current := 0
		for _, r := range info.Cluster.Replicas {
			if r.Current {
				current++
			}
		}
		if current == Size-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d replicas current 30s after the restart", current, Size-1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
