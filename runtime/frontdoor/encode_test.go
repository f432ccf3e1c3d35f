package frontdoor

import (
	"testing"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
)

// TestEncodingMatchesProto: a batch appended item by item decodes as the
// IngressBatch of the same messages, and its size is the sum of the items'.
func TestEncodingMatchesProto(t *testing.T) {
	msgs := []Message{
		{Target: router.Address{Type: "ns/f", ID: "a"}, Typename: "ns/T", Payload: []byte("x"), Key: "k1"},
		{Target: router.Address{Type: "ns/f", ID: "b.c d"}, Typename: "twinflow/json", Payload: make([]byte, 300), ReplyTo: "_INBOX.r", Key: "k2"},
		{Target: router.Address{Type: "ns/f", ID: "é"}, Typename: "ns/T"},
	}
	var b []byte
	size := 0
	want := &twinflowv1.IngressBatch{}
	for i := range msgs {
		m := &msgs[i]
		b = appendItem(b, m)
		size += itemSize(m)
		want.Items = append(want.Items, &twinflowv1.IngressEnvelope{
			Target:   &twinflowv1.Address{Type: m.Target.Type, Id: m.Target.ID},
			Argument: &twinflowv1.TypedValue{Typename: m.Typename, Value: m.Payload},
			ReplyTo:  m.ReplyTo, IdempotencyKey: m.Key,
		})
	}
	if len(b) != size {
		t.Errorf("encoded %d bytes, sizes add up to %d", len(b), size)
	}
	var got twinflowv1.IngressBatch
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Errorf("decoded %v, want %v", &got, want)
	}
	if std, _ := proto.Marshal(want); len(std) != len(b) {
		t.Errorf("%d bytes, proto.Marshal makes %d", len(b), len(std))
	}
}
