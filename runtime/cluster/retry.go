package cluster

import (
	"context"
	"time"

	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
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
		if err == nil || !natserr.Transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(r.Next()):
		}
	}
}
