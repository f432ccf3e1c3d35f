package natsbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoReply is wrapped by the error of a [Request] that was stored but
// not answered before its context ended.
var ErrNoReply = errors.New("no reply")

// Request publishes data to subject through JetStream and waits for one
// answer. It subscribes to a fresh inbox, names it in the [ReplyToHeader]
// header, waits for the stream's acknowledgement (so the request is stored
// before anyone answers) and then for a message on the inbox, until ctx
// ends.
//
// The reader of the stream answers by publishing with core NATS to
// [Msg.Reply]. header is not modified.
func Request(ctx context.Context, js jetstream.JetStream, subject string, header nats.Header, data []byte) (*nats.Msg, error) {
	nc := js.Conn()
	inbox := nc.NewInbox()
	// One answer is awaited: a channel of one, not SubscribeSync's channel
	// of 64k entries (512 KiB allocated and scanned by the collector for
	// every request, half the CPU of many concurrent requesters).
	answer := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(inbox, answer)
	if err != nil {
		return nil, fmt.Errorf("natsbus: request inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	h := make(nats.Header, len(header)+1)
	for k, v := range header {
		h[k] = v
	}
	h[ReplyToHeader] = []string{inbox}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
		return nil, fmt.Errorf("natsbus: request to %q: %w", subject, err)
	}
	select {
	case reply := <-answer:
		return reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("natsbus: waiting for the reply to %q: %w: %w", subject, ErrNoReply, ctx.Err())
	}
}
