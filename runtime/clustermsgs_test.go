package runtime

import (
	"errors"
	"testing"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// TestMessageBatches round-trips the messages of two sending key groups to
// one receiving key group, and refuses a message cut short.
func TestMessageBatches(t *testing.T) {
	p := func(id string) *storagev1.Pending {
		return &storagev1.Pending{Target: &twinflowv1.Address{Type: "t", Id: id}, Argument: &twinflowv1.TypedValue{Typename: "x", Value: []byte(id)}}
	}
	in := []messageBatch{{From: 3, Seq: 1, Pending: []*storagev1.Pending{p("a"), p("b")}}, {From: 300, Seq: 1 << 40, Pending: []*storagev1.Pending{p("c")}}}
	data, err := encodeMessageBatches(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeMessageBatches(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].From != 3 || out[0].Seq != 1 || len(out[0].Pending) != 2 || out[0].Pending[1].GetTarget().GetId() != "b" ||
		out[1].From != 300 || out[1].Seq != 1<<40 || string(out[1].Pending[0].GetArgument().GetValue()) != "c" {
		t.Fatalf("decoded %v, want %v", out, in)
	}
	for _, cut := range []int{1, 3, len(data) - 1} {
		if _, err := decodeMessageBatches(data[:cut]); !errors.Is(err, errMalformedMessages) {
			t.Errorf("a message cut to %d of %d bytes: %v, want errMalformedMessages", cut, len(data), err)
		}
	}
}
