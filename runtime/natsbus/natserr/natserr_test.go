package natserr

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPermanentPublish(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("publishing: %w", nats.ErrMaxPayload), true},
		{nats.ErrBadSubject, true},
		{nats.ErrConnectionClosed, true},
		{&jetstream.APIError{Code: 400, Description: "bad request"}, true},
		{fmt.Errorf("publishing: %w", &jetstream.APIError{Code: 503, Description: "no leader"}), false},
		{nats.ErrTimeout, false},
		{jetstream.ErrNoStreamResponse, false},
		{context.DeadlineExceeded, false},
	} {
		if got := PermanentPublish(tc.err); got != tc.want {
			t.Errorf("PermanentPublish(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("ensure stream: %w", context.DeadlineExceeded), true},
		{nats.ErrTimeout, true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, Description: "bad request"}, false},
		{context.Canceled, false},
		{nats.ErrConnectionClosed, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
