// Package natserr classifies the errors of NATS and JetStream requests.
// It is apart from natsbus so that clients (package client) use it without
// linking the embedded NATS server.
package natserr

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PermanentPublish reports whether retrying a publish that failed with
// err cannot succeed: a payload over the server's limit, an invalid subject
// or header, a closed connection, a request JetStream rejects as bad.
func PermanentPublish(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadHeaderMsg) ||
		errors.Is(err, nats.ErrHeadersNotSupported) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 400
}

// Transient reports whether a request that failed with err may succeed
// if made again: no answer in time (a stream or the JetStream meta group
// electing a leader answers nothing for seconds), no stream leader, a
// connection being re-established.
func Transient(err error) bool {
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
