// Package client sends messages to Twinflow functions from Go programs,
// over a NATS connection to the runtime's server.
//
// Send groups the one-way messages a process sends concurrently into
// durable writes: everything sent while one write is under way goes into
// the next, as one twinflow.v1.IngressBatch published to the direct
// ingress (twinflow.batch), so many goroutines, each waiting for its
// acknowledgement, share one fsync and one round trip to the server. It is
// the runtime's front door (package frontdoor) run in the client: the
// messages of a process no longer cross the NATS server one by one. Call
// writes a request the same way and waits for the function's reply on an
// inbox of the client's.
//
// Every message carries an idempotency key, given or generated, and is
// applied exactly once per key within the runtime's dedup window: a
// message whose Send failed is sent again with the key its error names.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/frontdoor"
)

// Options configure a Client. Zero values take the defaults.
type Options struct {
	// Limits bound one write and the messages waiting for it (see
	// frontdoor.Limits): by default a write holds up to 1,024 messages or
	// 512 KiB, and a message waits at most 2 s for its write.
	Limits frontdoor.Limits
	// WriteTimeout bounds one write with its retries. Default 5 s.
	WriteTimeout time.Duration
	// MaxPayload bounds a message's payload; default
	// router.DefaultMaxPayload, the runtime's default.
	MaxPayload int
	// Metrics, when set, registers the client's writes there, as the
	// runtime's front door counts its own: twinflow_frontdoor_write_seconds,
	// _write_messages, _write_failures_total, _refused_full_total,
	// _refused_waited_total and _queued_messages.
	Metrics prometheus.Registerer
	// Logger receives the failures of writes. Default slog.Default().
	Logger *slog.Logger
}

// wrapWriter, when set, wraps the writer of the clients made afterwards;
// tests use it to lose a write's acknowledgement.
var wrapWriter func(frontdoor.Writer) frontdoor.Writer

// ErrClosed is what Send and Call return after Close.
var ErrClosed = errors.New("twinflow: the client is closed")

// Client sends messages to a runtime. It is safe for concurrent use.
type Client struct {
	door    *frontdoor.Door
	replies *frontdoor.Replies
	closed  atomic.Bool
}

// New returns a client that sends over nc, a connection to the runtime's
// NATS server as an identity allowed the direct ingress and the front
// door (the embedded server's client identity: runinfo.Info.ConnectNATS).
// Close stops it; nc stays open.
func New(nc *nats.Conn, opts Options) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var w frontdoor.Writer = frontdoor.StreamWriter{JS: js, Subject: router.BatchSubject}
	if wrapWriter != nil {
		w = wrapWriter(w)
	}
	door := frontdoor.New(frontdoor.Config{
		Limits:       opts.Limits,
		Stream:       router.DirectStream,
		MaxPayload:   opts.MaxPayload,
		WriteTimeout: opts.WriteTimeout,
		Metrics:      opts.Metrics,
		Logger:       opts.Logger,
		// No Read: the runtime holds its front door's writes while its
		// intake is paused; a client cannot see that, and its writes wait
		// in the stream as direct publishes do.
		Closing: "the client was closed before the message was written; send it again, with the same idempotency key, with an open client",
	}, w)
	// The inboxes of calls: under the connection's inbox prefix, which only
	// its identity may read.
	replies, err := frontdoor.NewReplies(nc, nc.NewInbox())
	if err != nil {
		_ = door.Close(context.Background())
		return nil, err
	}
	return &Client{door: door, replies: replies}, nil
}

// Ack says where a message was stored.
type Ack struct {
	// Stream and Seq are the stream message holding it, with the others
	// of its write.
	Stream string
	Seq    uint64
	// Key is the message's idempotency key.
	Key string
}

// Error is why a message was not accepted, or a call not answered: its
// Reason (a router reason, such as router.ReasonUnavailable), what was
// wrong, and the message's idempotency key. When the caller's context
// ended, Error wraps its error.
type Error struct {
	Reason router.Reason
	Detail string
	Key    string
	err    error
}

// Unwrap returns the context's error when the caller's context ended.
func (e *Error) Unwrap() error { return e.err }

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("twinflow: %s (%s)", e.Detail, e.Reason)
	}
	return fmt.Sprintf("twinflow: %s (%s; idempotency key %s)", e.Detail, e.Reason, e.Key)
}

// Temporary reports whether sending the message again, with the same key,
// may succeed: the runtime or the write was unavailable, or the caller
// stopped waiting for the write (the message may be stored: the key makes
// the repeat safe).
func (e *Error) Temporary() bool { return e.Reason == router.ReasonUnavailable }

// SendOption changes how one message is sent.
type SendOption func(*sendOptions)

type sendOptions struct{ key string }

// WithKey sets the message's idempotency key; without it one is generated
// and returned in the Ack or the Error.
func WithKey(key string) SendOption { return func(o *sendOptions) { o.key = key } }

// Send sends payload, of the given typename ("namespace/name"), to the
// address, and returns once it is durable in the runtime's ingress stream.
// Messages sent concurrently share a write. When ctx ends first, Send
// returns a temporary Error wrapping ctx's error: the message may or may
// not be stored, and is sent again with the same key.
func (c *Client) Send(ctx context.Context, to router.Address, typename string, payload []byte, opts ...SendOption) (Ack, error) {
	return c.submit(ctx, frontdoor.Message{Target: to, Typename: typename, Payload: payload}, opts)
}

// submit queues m for a write and waits until the write is over.
func (c *Client) submit(ctx context.Context, m frontdoor.Message, opts []SendOption) (Ack, error) {
	if c.closed.Load() {
		return Ack{}, ErrClosed
	}
	var so sendOptions
	for _, o := range opts {
		o(&so)
	}
	m.Key = so.key
	if m.Key == "" {
		// Made here rather than by the door, so that an error names it
		// however the wait ends.
		m.Key = nuid.Next()
	}
	res := make(chan frontdoor.Result, 1)
	if err := c.door.Submit(m, func(r frontdoor.Result) { res <- r }); err != nil {
		return Ack{}, &Error{Reason: err.Reason, Detail: err.Detail, Key: m.Key}
	}
	select {
	case r := <-res:
		if r.Err != nil {
			return Ack{}, &Error{Reason: r.Err.Reason, Detail: r.Err.Detail, Key: r.Key}
		}
		return Ack{Stream: r.Stream, Seq: r.Seq, Key: r.Key}, nil
	case <-ctx.Done():
		return Ack{}, &Error{Reason: router.ReasonUnavailable, Detail: "stopped waiting for the durable write: " + ctx.Err().Error(), Key: m.Key, err: ctx.Err()}
	}
}

// Call sends payload as a request to the address and returns the
// function's reply: its typename and bytes. The request goes into a write
// with the messages sent concurrently, as a Send; the reply comes to an
// inbox of the client's. When ctx ends before the request is stored, Call
// fails as Send does; when it ends after, with router.ReasonTimeout: the
// request will still be processed, and a repeat would be dropped. A call
// repeated with
// the key of one its address already received fails with
// router.ReasonDuplicate (the reply went to the first); one whose function
// failed for good, with router.ReasonFunctionFailed.
func (c *Client) Call(ctx context.Context, to router.Address, typename string, payload []byte, opts ...SendOption) (replyTypename string, reply []byte, err error) {
	inbox, answer, done := c.replies.Open()
	defer done()
	m := frontdoor.Message{Target: to, Typename: typename, Payload: payload, ReplyTo: inbox}
	ack, err := c.submit(ctx, m, opts)
	if err != nil {
		return "", nil, err
	}
	select {
	case a := <-answer:
		if text := a.Header.Get(router.ErrorHeader); text != "" {
			reason := router.Reason(a.Header.Get(router.ErrorReasonHeader))
			if reason == "" {
				reason = router.ReasonFunctionFailed
			}
			return "", nil, &Error{Reason: reason, Detail: text, Key: ack.Key}
		}
		return a.Header.Get(router.TypenameHeader), a.Data, nil
	case <-ctx.Done():
		return "", nil, &Error{Reason: router.ReasonTimeout, Detail: "stopped waiting for the reply: " + ctx.Err().Error(), Key: ack.Key, err: ctx.Err()}
	}
}

// Close stops taking messages (Send and Call return ErrClosed), fails
// those still waiting for a write as unavailable, and waits for the writes
// in flight, or for ctx.
func (c *Client) Close(ctx context.Context) error {
	c.closed.Store(true)
	err := c.door.Close(ctx)
	c.replies.Close()
	return err
}
