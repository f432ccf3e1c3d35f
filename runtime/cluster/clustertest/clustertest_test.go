package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestFaults goes through what the package offers on an R3 stream: the
// leader stopped (it hands its leadership over), a follower killed, a
// follower paused, each time with publishing going on, the servers
// restarted and caught up, and the leadership moved on request.
func TestFaults(t *testing.T) {
	c := Start(t)
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	published := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "s.x", []byte("m"))
				pcancel()
				if err == nil {
					published++
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish: %v", err)
				}
			}
		}
	}
	follower := func() int {
		return (c.StreamLeader(js, "S") + 1) % Size
	}
	publish(10)

	leader := c.StreamLeader(js, "S")
	c.Stop(leader)
	publish(10)
	if again := c.StreamLeader(js, "S"); again == leader {
		t.Fatalf("server %d still leads the stream after it stopped", leader)
	}
	c.Restart(leader)

	f := follower()
	c.Kill(f)
	publish(10)
	c.Restart(f)

	f = follower()
	c.Pause(f)
	if err := c.Server(f).healthy(); err == nil {
		t.Fatal("a paused server answered its health check")
	}
	publish(10)
	c.Resume(f)

	c.MoveLeader(js, "S", 2)
	if got := c.StreamLeader(js, "S"); got != 2 {
		t.Fatalf("server %d leads the stream after it was moved to server 2", got)
	}
	// Every server catches up with every acknowledged message.
	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
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
		if info.State.Msgs == uint64(published) && current == Size-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d of %d messages, %d of %d replicas current", info.State.Msgs, published, current, Size-1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
