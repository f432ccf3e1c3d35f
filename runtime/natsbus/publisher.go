package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
)

// Record is one message for a [Publisher].
type Record struct {
	// Subject is the subject to publish to; a stream must capture it.
	Subject string
	// Header holds the message headers; Publish does not modify it.
	Header nats.Header
	// Data is the payload.
	Data []byte
	// MsgID, when not empty, is sent as the Nats-Msg-Id header: JetStream
	// stores one message per ID within the stream's duplicate window and
	// acknowledges repeats without storing them again.
	MsgID string
}

// PublisherOptions configures a [Publisher]. Zero values take the defaults.
type PublisherOptions struct {
	// MaxInFlight is how many publishes may await their acknowledgement at
	// once. Default 1024. Keep it below the JetStream context's
	// PublishAsyncMaxPending (4000 by default).
	MaxInFlight int
	// AckTimeout is how long one publish may wait for its acknowledgement
	// before it counts as failed and is retried. Default 5s.
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential pause between
	// retry rounds. Defaults 20ms and 2s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives retries. Default slog.Default().
	Logger *slog.Logger
}

// Publisher publishes records to JetStream and waits for their
// acknowledgements. It is safe for concurrent use.
type Publisher struct {
	js   jetstream.JetStream
	opts PublisherOptions
	log  *slog.Logger
}

// NewPublisher returns a Publisher that publishes through js.
func NewPublisher(js jetstream.JetStream, opts PublisherOptions) *Publisher {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 1024
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 20 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(2*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Publisher{js: js, opts: opts, log: opts.Logger.With("component", "nats-publisher")}
}

// Publish publishes recs asynchronously and returns when JetStream has
// acknowledged every one of them. Publishes that fail for a reason that may
// pass (no stream responding during a restart, a lost connection, a missing
// acknowledgement, a full stream) are retried with backoff until ctx ends.
// It returns an error when ctx ends first, or at once when the connection is
// closed. A record refused for a reason that retrying cannot fix (a payload
// over the server's limit, an invalid subject or header, a request
// JetStream rejects as bad) does not hold up the others: they are published
// and acknowledged, and Publish then returns a [*RejectedError] naming the
// refused records.
//
// Records are stored in order as long as nothing fails. A retried record
// lands after the records that succeeded meanwhile, and a retried record
// without a MsgID may be stored twice (its first publish may have been
// stored and only the acknowledgement lost); with a MsgID JetStream drops
// the repeat.
func (p *Publisher) Publish(ctx context.Context, recs []Record) error {
	todo := make([]int, len(recs))
	for i := range todo {
		todo[i] = i
	}
	retry := backoff.Retrier{Policy: backoff.Policy{Base: p.opts.MinBackoff, Max: p.opts.MaxBackoff}}
	rejected := &RejectedError{}
	for round := 1; ; round++ {
		failed, cause, err := p.publishRound(ctx, recs, todo, rejected)
		if err != nil {
			return err
		}
		if len(failed) == 0 {
			if len(rejected.Records) > 0 {
				rejected.sort()
				rejected.total = len(recs)
				return rejected
			}
			return nil
		}
		p.log.Debug("publishes failed, retrying", "failed", len(failed), "of", len(todo), "round", round, "err", cause)
		if round == 3 {
			p.log.Warn("publishes keep failing, retrying", "failed", len(failed), "err", cause)
		}
		t := time.NewTimer(retry.Next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("natsbus: %d of %d records not acknowledged: %w (last failure: %v)", len(failed), len(recs), ctx.Err(), cause)
		}
		slices.Sort(failed)
		todo = failed
	}
}

// inflight is one publish awaiting its acknowledgement.
type inflight struct {
	idx      int
	f        jetstream.PubAckFuture
	deadline time.Time
}

// errAckTimeout marks a publish whose acknowledgement did not come in time.
var errAckTimeout = errors.New("natsbus: no acknowledgement within AckTimeout")

// publishRound publishes recs[i] for i in todo and waits for them. It
// returns the indices that failed and may be retried with the last such
// failure, or an error that ends Publish. Records refused for good are added
// to rejected.
func (p *Publisher) publishRound(ctx context.Context, recs []Record, todo []int, rejected *RejectedError) (failed []int, cause error, err error) {
	window := make([]inflight, 0, min(len(todo), p.opts.MaxInFlight))
	head := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	// await waits for the oldest publish in the window.
	await := func() error {
		e := window[head]
		window[head] = inflight{}
		head++
		if head == len(window) {
			window, head = window[:0], 0
		}
		timer.Reset(time.Until(e.deadline))
		select {
		case <-e.f.Ok():
			return nil
		case perr := <-e.f.Err():
			if errors.Is(perr, nats.ErrConnectionClosed) {
				return p.fail(recs[e.idx], perr)
			}
			if natserr.PermanentPublish(perr) {
				rejected.add(e.idx, recs[e.idx].Subject, perr)
				return nil
			}
			failed, cause = append(failed, e.idx), perr
		case <-timer.C:
			failed, cause = append(failed, e.idx), errAckTimeout
		case <-ctx.Done():
			return fmt.Errorf("natsbus: publish interrupted: %w", ctx.Err())
		}
		return nil
	}

	for _, i := range todo {
		if len(window)-head >= p.opts.MaxInFlight {
			if err := await(); err != nil {
				return nil, nil, err
			}
		}
		f, perr := p.js.PublishMsgAsync(toNATS(&recs[i]))
		if perr != nil {
			if errors.Is(perr, nats.ErrConnectionClosed) {
				return nil, nil, p.fail(recs[i], perr)
			}
			if natserr.PermanentPublish(perr) {
				rejected.add(i, recs[i].Subject, perr)
				continue
			}
			failed, cause = append(failed, i), perr
			continue
		}
		window = append(window, inflight{idx: i, f: f, deadline: time.Now().Add(p.opts.AckTimeout)})
	}
	for len(window)-head > 0 {
		if err := await(); err != nil {
			return nil, nil, err
		}
	}
	return failed, cause, nil
}

func (p *Publisher) fail(rec Record, err error) error {
	return fmt.Errorf("natsbus: publish to %q failed permanently: %w", rec.Subject, err)
}

// RejectedError is what [Publisher.Publish] returns when some records were
// refused for a reason that retrying cannot fix; every other record was
// acknowledged. errors.Is sees the records' errors, e.g. nats.ErrMaxPayload.
type RejectedError struct {
	// Records are the indexes of the refused records in the slice given to
	// Publish, in increasing order.
	Records []int
	// Errs are their errors, in the same order.
	Errs []error

	subjects []string
	total    int
}

func (e *RejectedError) add(i int, subject string, err error) {
	e.Records = append(e.Records, i)
	e.Errs = append(e.Errs, err)
	e.subjects = append(e.subjects, subject)
}

// sort orders the records by index.
func (e *RejectedError) sort() {
	idx := make([]int, len(e.Records))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return e.Records[a] - e.Records[b] })
	recs, errs, subjects := make([]int, len(idx)), make([]error, len(idx)), make([]string, len(idx))
	for to, from := range idx {
		recs[to], errs[to], subjects[to] = e.Records[from], e.Errs[from], e.subjects[from]
	}
	e.Records, e.Errs, e.subjects = recs, errs, subjects
}

// Error names the first refused record.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("natsbus: %d of %d records refused for good; the first, to %q: %v", len(e.Records), e.total, e.subjects[0], e.Errs[0])
}

// Unwrap returns the records' errors.
func (e *RejectedError) Unwrap() []error { return e.Errs }

// toNATS builds the message for rec, adding Nats-Msg-Id to a copy of its
// header.
func toNATS(rec *Record) *nats.Msg {
	m := &nats.Msg{Subject: rec.Subject, Header: rec.Header, Data: rec.Data}
	if rec.MsgID != "" {
		h := make(nats.Header, len(rec.Header)+1)
		for k, v := range rec.Header {
			h[k] = v
		}
		h[jetstream.MsgIDHeader] = []string{rec.MsgID}
		m.Header = h
	}
	return m
}
