package cluster

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/natsbus/natsbustest"
)

func TestAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.12.0": true, "2.15.2": true, "3.0.0": true, "2.11.9": false, "1.99.0": false, "2.12.0-beta": true, "": false, "x.y": false} {
		if got := atLeast(v, 2, 12); got != want {
			t.Errorf("atLeast(%q, 2, 12) = %v, want %v", v, got, want)
		}
	}
}

// TestOpenOnOneServer shows the error of a cluster of three replicas on a
// single NATS server.
func TestOpenOnOneServer(t *testing.T) {
	url := natsbustest.StartExternalServer(t, natsbustest.BuildExternalServer(t), "")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(testContext(t), js, Config{Name: "single"})
	if err == nil || !strings.Contains(err.Error(), "run 3 clustered servers, or set the replicas to 1") {
		t.Fatalf("Open with 3 replicas on one server: %v, want an error saying to start the servers or lower the replicas", err)
	}
	c, err := Open(testContext(t), js, Config{Name: "single", Replicas: 1})
	if err != nil || c.KeyGroups() != 128 {
		t.Fatalf("Open with 1 replica on one server: %v, %v", c, err)
	}
}
