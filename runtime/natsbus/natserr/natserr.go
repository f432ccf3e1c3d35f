// Package natserr classifies the errors of NATS and JetStream publishes.
// It is apart from natsbus so that clients (package client) use it without
// linking the embedded NATS server.
package natserr

import (
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
