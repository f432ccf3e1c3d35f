package runtime

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// TestQueryWhileJoining asks a cluster worker that has not joined yet
// (a restarted one, say) for an address's state: it answers unavailable,
// saying why, instead of failing the request.
func TestQueryWhileJoining(t *testing.T) {
	cm := &clusterMode{worker: "w-1"}
	_, err := cm.forwardGetState(context.Background(), 7, &twinflowv1.GetStateRequest{Address: &twinflowv1.Address{Type: "t", Id: "a"}})
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "joining the cluster") {
		t.Fatalf("forwardGetState while joining: %v, want unavailable: joining the cluster", err)
	}
}
