package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// Publisher sends egress records, dead letters and replies to NATS.
type Publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	bus *natsbus.Publisher
	log *slog.Logger

	once  sync.Once
	async chan []*storagev1.EgressRecord
	stop  chan struct{}
	mu    struct {
		sync.Mutex
		queued, done uint64        // batches queued by PublishAsync, and stored
		progress     chan struct{} // closed when done grows
		closed       bool
	}
}

// NewPublisher returns a Publisher on nc and js.
func NewPublisher(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) *Publisher {
	p := &Publisher{nc: nc, js: js, bus: natsbus.NewPublisher(js, natsbus.PublisherOptions{Logger: log}), log: log,
		async: make(chan []*storagev1.EgressRecord, 1024), stop: make(chan struct{})}
	p.mu.progress = make(chan struct{})
	return p
}

// Publish stores records in JetStream and waits for every acknowledgement.
// Records with a message id are deduplicated by JetStream, which makes a
// repeat after a crash harmless.
//
// A record that NATS can never take (one larger than the server's maximum
// payload) must not hold up the records behind it: it is published as a
// dead letter on [router.EgressDeadLetterSubject] instead, with its payload
// cut to fit, under the same message id. A dead letter that is too large
// keeps its subject and is cut the same way.
func (p *Publisher) Publish(ctx context.Context, recs []*storagev1.EgressRecord) error {
	out := make([]natsbus.Record, len(recs))
	limit := int(p.nc.MaxPayload())
	for i, r := range recs {
		out[i] = p.fit(toRecord(r), limit)
	}
	err := p.bus.Publish(ctx, out)
	var rej *natsbus.RejectedError
	if !errors.As(err, &rej) {
		return err
	}
	// Only the refused records are published again, as dead letters; the
	// others are stored.
	again := make([]natsbus.Record, len(rej.Records))
	for j, i := range rej.Records {
		reason := router.ReasonUnknown
		if errors.Is(rej.Errs[j], nats.ErrMaxPayload) {
			reason = router.ReasonOversized
		}
		again[j] = p.deadLetter(out[i], rej.Errs[j], reason, limit)
	}
	err = p.bus.Publish(ctx, again)
	if errors.As(err, &rej) {
		// Not even the dead letter can be stored. Retrying cannot help, and
		// must not stop the records after it.
		for j, i := range rej.Records {
			p.log.Error("dropping a record that NATS refuses even as a dead letter", "subject", again[i].Subject,
				"original_subject", again[i].Header.Get(router.OriginalSubjectHeader), "err", rej.Errs[j])
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("publishing dead letters of refused records: %w", err)
	}
	return nil
}

func toRecord(r *storagev1.EgressRecord) natsbus.Record {
	h := make(nats.Header, len(r.GetHeaders()))
	for k, v := range r.GetHeaders() {
		h.Set(k, v)
	}
	return natsbus.Record{Subject: r.GetSubject(), Header: h, Data: r.GetData(), MsgID: r.GetMsgId()}
}

// fit returns rec, or its dead letter when it exceeds limit bytes.
func (p *Publisher) fit(rec natsbus.Record, limit int) natsbus.Record {
	size := len(rec.Data) + headerBytes(rec.Header, rec.MsgID)
	if limit <= 0 || size <= limit {
		return rec
	}
	err := fmt.Errorf("a record of %d bytes (with its headers) for %s exceeds the NATS server's maximum payload of %d bytes", size, rec.Subject, limit)
	return p.deadLetter(rec, err, router.ReasonOversized, limit)
}

// deadLetter turns rec into a dead letter that fits limit bytes. A record
// already on a dead-letter subject keeps its subject and headers and only
// has its payload cut.
func (p *Publisher) deadLetter(rec natsbus.Record, cause error, reason router.Reason, limit int) natsbus.Record {
	h := make(nats.Header, len(rec.Header)+4)
	for k, v := range rec.Header {
		h[k] = v
	}
	if !strings.HasPrefix(rec.Subject, "twinflow.dlq.") {
		p.log.Error("egress record cannot be published; dead-lettering it", "subject", rec.Subject, "err", cause)
		h.Set(router.ErrorHeader, cause.Error())
		h.Set(router.ErrorReasonHeader, string(reason))
		h.Set(router.OriginalSubjectHeader, rec.Subject)
		rec.Subject = router.EgressDeadLetterSubject
	}
	data := rec.Data
	h.Set(router.OriginalSizeHeader, strconv.Itoa(len(data)))
	if room := limit - headerBytes(h, rec.MsgID) - 64; len(data) > room {
		data = data[:max(room, 0)]
	} else {
		h.Del(router.OriginalSizeHeader)
	}
	rec.Header, rec.Data = h, data
	return rec
}

// headerBytes is the size of the NATS header block for h plus a message id.
func headerBytes(h nats.Header, msgID string) int {
	if len(h) == 0 && msgID == "" {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	if msgID != "" {
		n += len(jetstream.MsgIDHeader) + len(": \r\n") + len(msgID)
	}
	return n
}

// PublishAsync queues at-least-once records to be published in the
// background, in order, retrying until they are stored. It never blocks: it
// returns false when the queue is full, and the caller keeps the records
// for its next checkpoint instead.
func (p *Publisher) PublishAsync(recs []*storagev1.EgressRecord) bool {
	p.once.Do(func() { go p.drain() })
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return false
	}
	select {
	case p.async <- recs:
		p.mu.queued++
		return true
	default:
		return false
	}
}

// Flush waits until every record queued by PublishAsync before the call is
// stored. The coordinator calls it before it commits a checkpoint, so that a
// checkpoint never covers an at-least-once record that was not published.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	target := p.mu.queued
	for p.mu.done < target && !p.mu.closed {
		if err := ctx.Err(); err != nil {
			p.mu.Unlock()
			return err
		}
		wait := p.mu.progress
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		p.mu.Lock()
	}
	closed := p.mu.closed && p.mu.done < target
	p.mu.Unlock()
	if closed {
		return errors.New("publisher closed before the at-least-once egress was published")
	}
	return nil
}

func (p *Publisher) drain() {
	for {
		var recs []*storagev1.EgressRecord
		select {
		case recs = <-p.async:
		case <-p.stop:
			return
		}
		retry := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := p.Publish(ctx, recs)
			cancel()
			if err == nil {
				break
			}
			p.log.Error("publishing at-least-once egress failed; retrying", "records", len(recs), "err", err)
			select {
			case <-time.After(retry.Next()):
			case <-p.stop:
				return
			}
		}
		p.mu.Lock()
		if p.mu.closed {
			p.mu.Unlock()
			return
		}
		p.mu.done++
		close(p.mu.progress)
		p.mu.progress = make(chan struct{})
		p.mu.Unlock()
	}
}

// Close stops the background publishing. Records still queued are not
// published; the checkpoint that would cover them never completes, so they
// are produced again after a restart.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.mu.closed {
		p.mu.closed = true
		close(p.stop)
		close(p.mu.progress)
	}
}

// Reply answers a request on core NATS: reply subjects are inboxes that no
// stream captures. A reply is lost if the requester has gone, as with any
// NATS request. A reply too large for NATS is answered with an empty
// message whose headers say why, so that the requester need not wait for
// its timeout.
func (p *Publisher) Reply(rec *storagev1.EgressRecord) {
	msg := nats.NewMsg(rec.GetSubject())
	for k, v := range rec.GetHeaders() {
		msg.Header.Set(k, v)
	}
	msg.Data = rec.GetData()
	err := p.nc.PublishMsg(msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		p.log.Warn("reply too large for NATS; answering with the error", "subject", rec.GetSubject(), "bytes", len(msg.Data))
		msg.Header.Set(router.ErrorHeader, fmt.Sprintf("the reply of %d bytes exceeds the NATS server's maximum payload of %d bytes", len(msg.Data), p.nc.MaxPayload()))
		msg.Header.Set(router.ErrorReasonHeader, string(router.ReasonOversized))
		msg.Header.Set(router.OriginalSizeHeader, strconv.Itoa(len(msg.Data)))
		msg.Data = nil
		err = p.nc.PublishMsg(msg)
	}
	if err != nil {
		p.log.Warn("publishing reply failed", "subject", rec.GetSubject(), "err", err)
	}
}
