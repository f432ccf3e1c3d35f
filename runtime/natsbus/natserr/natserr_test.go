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
