package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/backoff"
)

// requestTimeout bounds one attempt of a request to NATS. While a stream
// elects a leader (4 to 9 s after a server is killed) its requests get no
// answer at all; an attempt must end so that the next one can find the new
// leader.
const requestTimeout = 3 * time.Second

// retryPolicy paces the attempts of an operation.
var retryPolicy = backoff.Policy{Base: 50 * time.Millisecond, Max: time.Second}

// retry runs op, each attempt with its own timeout, again after a backoff
// while it fails with an error that can pass, until ctx ends. It returns
// op's last error.
func retry(ctx context.Context, op func(ctx context.Context) error) error {
	r := backoff.Retrier{Policy: retryPolicy}
	for {
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := op(actx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(r.Next()):
		}
	}
}

// transient reports whether err may pass by itself: no answer in time, no
// stream leader, a connection being re-established.
func transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	}
	var apiErr *jetstream.APIError
	// 503: JetStream (or its cluster) is temporarily unavailable.
	return errors.As(err, &apiErr) && apiErr.Code == 503
}
