package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/twinflow/twinflow/runtime/backoff"
)

// ReplyToHeader names the inbox a client waits on for an answer. JetStream
// drops the reply subject of a publish, so a request through a stream
// carries its inbox in this header instead; see [Request] and [Msg.Reply].
const ReplyToHeader = "Twinflow-Reply-To"

// ErrClosed is returned by [Reader.Next] after [Reader.Close].
var ErrClosed = errors.New("natsbus: reader closed")

// Msg is one stream message returned by a [Reader].
type Msg struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Subject is the subject the message was published to.
	Subject string
	// Header holds the message headers; nil when there are none.
	Header nats.Header
	// Data is the payload.
	Data []byte
	// Reply is the value of the ReplyToHeader header: the inbox the
	// publisher waits on, or "" when it expects no answer. Any publisher
	// can set it, so answer only on subjects the deployment allows.
	Reply string
	// Time is when the stream stored the message.
	Time time.Time
}

// ReaderOptions configures a [Reader]. Zero values take the defaults.
type ReaderOptions struct {
	// MaxBatch is the most messages one Next returns. Default 1024.
	MaxBatch int
	// MaxWait is how long Next waits for a first message. Default 50ms.
	MaxWait time.Duration
	// Buffer is how many messages the Reader asks the server for ahead of
	// Next. Default 4×MaxBatch; at least MaxBatch.
	Buffer int
	// BufferBytes bounds the bytes asked for ahead of Next. Default 64 MiB;
	// raised to fit two messages of the server's maximum payload.
	BufferBytes int
	// RequestExpiry is how long one pull request stays open on the server.
	// A request that is not answered within RequestExpiry plus a grace
	// period means the consumer was lost, and the Reader re-creates it.
	// Default 5s.
	RequestExpiry time.Duration
	// CreateTimeout bounds one attempt to create the server-side consumer.
	// Default 5s.
	CreateTimeout time.Duration
	// Logger receives consumer losses and recoveries. Default slog.Default().
	Logger *slog.Logger
	// FilterSubjects, when not nil, reads only the stream's messages on
	// these subjects (wildcards allowed); an empty, non-nil list reads
	// nothing until [Reader.Seek] gives it subjects.
	FilterSubjects []string
}

func (o *ReaderOptions) setDefaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 50 * time.Millisecond
	}
	if o.Buffer <= 0 {
		o.Buffer = 4 * o.MaxBatch
	}
	o.Buffer = max(o.Buffer, o.MaxBatch)
	if o.BufferBytes <= 0 {
		o.BufferBytes = 64 << 20
	}
	if o.RequestExpiry <= 0 {
		o.RequestExpiry = 5 * time.Second
	}
	if o.CreateTimeout <= 0 {
		o.CreateTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Reader reads one stream in sequence order, in batches.
//
// Design. A Reader drives an ephemeral, memory-backed JetStream consumer
// with AckPolicy none (no acks, no MaxAckPending, no redeliveries) through
// the raw pull protocol: at most one pull request is open at a time, for
// Buffer messages and BufferBytes bytes, answered on its own reply subject
// (inbox.N), so every message and status can be attributed. Messages land
// in a channel that holds a whole request, so nothing is dropped for want of
// room, and Next drains it. The Reader checks that the consumer's delivery
// sequence grows by exactly one and that stream sequences increase; on a
// gap, a reconnect, an error status or a request left unanswered past its
// expiry it drops the consumer and creates a new one that starts right
// after the last sequence Next returned. That is what makes it never skip
// or repeat a message.
//
// The library's ordered consumer (jetstream.OrderedConsumer) does the same
// bookkeeping, but its Messages iterator has no non-blocking receive (a
// batch can only be gathered with a timer per message), its Fetch re-creates
// the consumer on every call, and its reset retries forever inside Next,
// so Next could not promise to return within MaxWait.
//
// Messages that the stream removed before the Reader reached them (by its
// limits, a purge or a delete) are not returned: Seq then jumps. Nothing is
// acknowledged, so a Reader never changes the stream; the caller records
// the last Seq it processed and passes it to NewReader to resume.
//
// A Reader is used from one goroutine; Close may be called from another.
type Reader struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	stream     string
	nextSubj   string // the pull request subject without the consumer name
	opts       ReaderOptions
	log        *slog.Logger
	namePrefix string
	deleting   sync.WaitGroup // consumer deletions in flight
	// pending is how many messages of the stream that match the filter
	// came after the last one returned, as the server said with it.
	pending atomic.Uint64

	// mu serialises Next and Close. Next holds it for its whole run, so
	// everything below is touched by one goroutine at a time.
	mu struct {
		sync.Mutex
		closed  bool
		last    uint64 // stream sequence of the last message returned
		gen     int    // consumers created so far
		cur     *pull  // nil while there is no consumer
		retryAt time.Time
		retry   backoff.Retrier
		lost    bool // logged a loss and not yet a recovery
		timer   *time.Timer
		reqBuf  []byte
	}
}

// pull is one consumer generation.
type pull struct {
	name       string
	inbox      string // requests reply to inbox.N
	sub        *nats.Subscription
	ch         chan *nats.Msg
	opened     time.Time
	reconnects uint64
	dseq       uint64 // last consumer delivery sequence taken
	reqNo      uint64
	req        pullRequest
}

// pullRequest is the open pull request of a pull.
type pullRequest struct {
	open     bool
	reply    string
	batch    int
	maxBytes int
	got      int
	gotBytes int
	deadline time.Time // expiry plus grace: an answer must have come by then
}

// NewReader returns a Reader of stream that starts right after stream
// sequence startAfterSeq (0 reads from the beginning), through js and its
// connection. It creates the server-side consumer before returning, so a
// missing stream is reported here.
func NewReader(ctx context.Context, js jetstream.JetStream, stream string, startAfterSeq uint64, opts ReaderOptions) (*Reader, error) {
	opts.setDefaults()
	r := &Reader{
		nc:         js.Conn(),
		js:         js,
		stream:     stream,
		nextSubj:   apiPrefix(js) + "CONSUMER.MSG.NEXT." + stream + ".",
		opts:       opts,
		log:        opts.Logger.With("component", "nats-reader", "stream", stream),
		namePrefix: "twinflow_" + nuid.Next(),
	}
	r.mu.last = startAfterSeq
	r.mu.retry.Policy = backoff.Policy{Base: 50 * time.Millisecond, Max: 2 * time.Second}
	r.mu.timer = time.NewTimer(time.Hour)
	r.mu.timer.Stop()
	if r.idle() {
		return r, nil
	}
	if err := r.open(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Next returns the next messages of the stream, in sequence order, at most
// MaxBatch of them. It waits up to MaxWait for a first message and returns
// an empty batch if none came; creating a lost consumer again can add up to
// CreateTimeout. It returns an error only when ctx ends, after Close, when
// the connection is closed, or when the stream does not exist; the Reader
// stays usable after an error other than ErrClosed. Transient trouble (a
// server restart, a lost consumer) is handled inside and logged.
//
// The caller owns the returned slice and the messages' headers and data.
func (r *Reader) Next(ctx context.Context) ([]Msg, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.nc.IsClosed() {
		return nil, nats.ErrConnectionClosed
	}
	deadline := time.Now().Add(r.opts.MaxWait)
	if r.idle() {
		r.sleep(ctx, r.opts.MaxWait)
		return nil, ctx.Err()
	}
	for {
		now := time.Now()
		p := r.mu.cur
		if p != nil && r.nc.Stats().Reconnects != p.reconnects {
			r.drop("connection re-established")
			p = nil
		}
		if p == nil && !now.Before(r.mu.retryAt) {
			if err := r.open(ctx); err != nil {
				if terminal(err) || ctx.Err() != nil {
					return nil, err
				}
				r.retryLater(err)
			}
			p = r.mu.cur
		}
		if p == nil {
			// Wait for the next attempt or the deadline.
			until := deadline
			if r.mu.retryAt.Before(until) {
				until = r.mu.retryAt
			}
			if !r.sleep(ctx, until.Sub(now)) {
				return nil, ctx.Err()
			}
			if !time.Now().Before(deadline) {
				return nil, nil
			}
			continue
		}
		r.request(p, now)
		batch, err := r.receive(ctx, p, deadline)
		if len(batch) > 0 || err != nil {
			return batch, err
		}
		if r.mu.cur == p {
			// The wait timed out with the channel empty: an open request
			// that should have been answered by now means the consumer is
			// gone.
			if p.req.open && time.Now().After(p.req.deadline) {
				r.drop("pull request not answered")
			}
			return nil, nil
		}
		// The consumer was dropped while receiving; try again within the
		// deadline.
		if !time.Now().Before(deadline) {
			return nil, nil
		}
	}
}

// receive waits until deadline for a first message, then takes what is
// already buffered, up to MaxBatch. It returns early, with what it has, when
// it drops the consumer.
func (r *Reader) receive(ctx context.Context, p *pull, deadline time.Time) ([]Msg, error) {
	var batch []Msg
	t := r.mu.timer
	t.Reset(time.Until(deadline))
	defer t.Stop()
	for len(batch) == 0 {
		select {
		case m := <-p.ch:
			if batch == nil {
				batch = make([]Msg, 0, min(r.opts.MaxBatch, 1+len(p.ch)))
			}
			if !r.take(p, m, &batch) {
				return batch, nil
			}
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for len(batch) < r.opts.MaxBatch {
		select {
		case m := <-p.ch:
			if !r.take(p, m, &batch) {
				return batch, nil
			}
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// take handles one message from the inbox: it appends a stream message to
// batch, or accounts a status. It returns false after dropping the consumer.
func (r *Reader) take(p *pull, m *nats.Msg, batch *[]Msg) bool {
	if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
		return r.status(p, m)
	}
	meta, ok := parseAckReply(m.Reply)
	if !ok {
		r.drop("unparsable message metadata " + strconv.Quote(m.Reply))
		return false
	}
	if meta.consumer != p.name {
		return true // not ours; cannot happen with one inbox per consumer
	}
	if meta.dseq != p.dseq+1 {
		r.drop(fmt.Sprintf("delivery gap: sequence %d after %d", meta.dseq, p.dseq))
		return false
	}
	if meta.sseq <= r.mu.last {
		r.drop(fmt.Sprintf("stream sequence %d not after %d", meta.sseq, r.mu.last))
		return false
	}
	p.dseq = meta.dseq
	r.mu.last = meta.sseq
	r.pending.Store(meta.pending)
	if p.req.open {
		p.req.got++
		p.req.gotBytes += m.Size()
		if p.req.got >= p.req.batch || p.req.gotBytes >= p.req.maxBytes {
			p.req.open = false
		}
	}
	if !p.req.open {
		r.request(p, time.Now())
	}
	*batch = append(*batch, Msg{
		Seq:     meta.sseq,
		Subject: m.Subject,
		Header:  m.Header,
		Data:    m.Data,
		Reply:   m.Header.Get(ReplyToHeader),
		Time:    time.Unix(0, meta.ts),
	})
	return true
}

// status handles a status message (a message without JetStream metadata).
func (r *Reader) status(p *pull, m *nats.Msg) bool {
	if !p.req.open || m.Subject != p.req.reply {
		// A status of an earlier request, e.g. "409 Batch Completed" after
		// the batch count was reached.
		return true
	}
	code := m.Header.Get("Status")
	desc := m.Header.Get("Description")
	switch {
	case code == "100": // idle heartbeat
		return true
	case code == "408", code == "404",
		code == "409" && strings.Contains(desc, "Exceeds MaxBytes"),
		code == "409" && strings.Contains(desc, "Batch Completed"):
		// The request ended; ask again.
		p.req.open = false
		r.request(p, time.Now())
		return true
	case code == "503":
		r.drop("consumer gone (no responders)")
		return false
	default:
		r.drop(fmt.Sprintf("pull status %s %s", code, desc))
		return false
	}
}

// request opens a pull request for a full buffer unless one is open.
func (r *Reader) request(p *pull, now time.Time) {
	if p.req.open {
		return
	}
	p.reqNo++
	reply := p.inbox + "." + strconv.FormatUint(p.reqNo, 10)
	expires := r.opts.RequestExpiry
	b := r.mu.reqBuf[:0]
	b = append(b, `{"batch":`...)
	b = strconv.AppendInt(b, int64(r.opts.Buffer), 10)
	b = append(b, `,"max_bytes":`...)
	b = strconv.AppendInt(b, int64(r.opts.BufferBytes), 10)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, int64(expires), 10)
	b = append(b, '}')
	r.mu.reqBuf = b
	if err := r.nc.PublishRequest(r.nextSubj+p.name, reply, b); err != nil {
		r.log.Debug("pull request not sent", "err", err)
		return // tried again on the next call
	}
	p.req = pullRequest{
		open:     true,
		reply:    reply,
		batch:    r.opts.Buffer,
		maxBytes: r.opts.BufferBytes,
		deadline: now.Add(expires + expires/2 + time.Second),
	}
}

// apiPrefix returns the JetStream API prefix of js, ending in a dot.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	default:
		return jetstream.DefaultAPIPrefix
	}
}

// open creates a consumer that starts after the last sequence returned.
func (r *Reader) open(ctx context.Context) error {
	if r.nc.IsClosed() {
		return nats.ErrConnectionClosed
	}
	if !r.nc.IsConnected() {
		return nats.ErrDisconnected
	}
	if mp := int(r.nc.MaxPayload()); r.opts.BufferBytes < 2*mp+64<<10 {
		r.opts.BufferBytes = 2*mp + 64<<10
	}
	r.mu.gen++
	name := r.namePrefix + "_" + strconv.Itoa(r.mu.gen)
	inbox := r.nc.NewInbox()
	// Room for a whole request and a few statuses: the server never sends
	// more than that before the next request.
	ch := make(chan *nats.Msg, r.opts.Buffer+16)
	sub, err := r.nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		return fmt.Errorf("natsbus: reader inbox: %w", err)
	}
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		Description:       "twinflow stream reader",
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 2 * time.Minute,
		FilterSubjects:    r.opts.FilterSubjects,
	}
	if r.mu.last > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = r.mu.last + 1
	}
	cctx, cancel := context.WithTimeout(ctx, r.opts.CreateTimeout)
	defer cancel()
	if _, err := r.js.CreateConsumer(cctx, r.stream, cfg); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("natsbus: create consumer on stream %s: %w", r.stream, err)
	}
	r.mu.cur = &pull{
		name:       name,
		inbox:      inbox,
		sub:        sub,
		ch:         ch,
		opened:     time.Now(),
		reconnects: r.nc.Stats().Reconnects,
	}
	if r.mu.lost {
		r.mu.lost = false
		r.log.Info("reader resumed", "after_seq", r.mu.last)
	}
	return nil
}

// drop abandons the current consumer; Next creates a new one.
func (r *Reader) drop(reason string) {
	p := r.mu.cur
	if p == nil {
		return
	}
	r.mu.cur = nil
	if time.Since(p.opened) < time.Second {
		// Lost again right after creation: back off instead of spinning.
		r.backOff()
	} else {
		r.mu.retry.Reset()
		r.mu.retryAt = time.Time{}
	}
	_ = p.sub.Unsubscribe()
	if !r.mu.lost {
		r.mu.lost = true
		r.log.Warn("reader lost its consumer, resuming", "reason", reason, "after_seq", r.mu.last)
	} else {
		r.log.Debug("reader dropped consumer", "reason", reason)
	}
	r.deleteConsumer(p.name)
}

func (r *Reader) deleteConsumer(name string) {
	if !r.nc.IsConnected() {
		return // the server removes it after its inactive threshold
	}
	r.deleting.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// Best effort: the server removes an inactive consumer by itself.
		_ = r.js.DeleteConsumer(ctx, r.stream, name)
	})
}

// retryLater logs a failed consumer creation and schedules the next one.
func (r *Reader) retryLater(err error) {
	if !r.mu.lost {
		r.mu.lost = true
		r.log.Warn("reader cannot create its consumer, retrying", "err", err, "after_seq", r.mu.last)
	} else {
		r.log.Debug("reader consumer creation failed", "err", err)
	}
	r.backOff()
}

// backOff schedules the next consumer creation with jittered exponential
// backoff, from 50ms up to 2s.
func (r *Reader) backOff() {
	r.mu.retryAt = time.Now().Add(r.mu.retry.Next())
}

// sleep waits for d or until ctx ends; it reports whether ctx is still live.
func (r *Reader) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := r.mu.timer
	t.Reset(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// terminal reports whether an error from open will not go away by retrying.
func terminal(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// Pending returns how many messages that match the reader's filter the
// stream held after the last one returned, when it was returned: the
// reader's lag, where the stream's last sequence counts messages of other
// filters too.
func (r *Reader) Pending() uint64 { return r.pending.Load() }

// release unsubscribes from the current consumer, if any, and deletes it.
func (r *Reader) release() {
	if p := r.mu.cur; p != nil {
		r.mu.cur = nil
		_ = p.sub.Unsubscribe()
		r.deleteConsumer(p.name)
	}
}

// idle reports whether the Reader has no subjects to read.
func (r *Reader) idle() bool {
	return r.opts.FilterSubjects != nil && len(r.opts.FilterSubjects) == 0
}

// Seek makes the following calls of Next read the stream's messages after
// sequence after, on the subjects of filter (see
// ReaderOptions.FilterSubjects), with a new consumer. Messages read and
// not yet returned are dropped. It waits for a running Next to return.
func (r *Reader) Seek(after uint64, filter []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.release()
	r.mu.last = after
	r.mu.retry.Reset()
	r.mu.retryAt = time.Time{}
	r.opts.FilterSubjects = filter
	r.pending.Store(0)
}

// Close deletes the server-side consumer and releases the Reader. It waits
// for a running Next to return.
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed {
		return
	}
	r.mu.closed = true
	r.release()
	r.deleting.Wait()
}

// ackMeta is what a JetStream message's ack subject says about it.
type ackMeta struct {
	stream, consumer string
	sseq, dseq       uint64
	ts               int64
	pending          uint64 // the consumer's messages after this one
}

// parseAckReply parses $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
// and the newer form with domain and account hash after "$JS.ACK." and a
// random token at the end.
func parseAckReply(s string) (ackMeta, bool) {
	var tok [12]string
	n := 0
	for n < len(tok) {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			tok[n] = s
			n++
			s = ""
			break
		}
		tok[n] = s[:i]
		n++
		s = s[i+1:]
	}
	if s != "" || tok[0] != "$JS" || tok[1] != "ACK" {
		return ackMeta{}, false
	}
	off := 2
	switch {
	case n == 9:
	case n >= 11:
		off = 4
	default:
		return ackMeta{}, false
	}
	sseq, err1 := strconv.ParseUint(tok[off+3], 10, 64)
	dseq, err2 := strconv.ParseUint(tok[off+4], 10, 64)
	ts, err3 := strconv.ParseInt(tok[off+5], 10, 64)
	pending, err4 := strconv.ParseUint(tok[off+6], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return ackMeta{}, false
	}
	return ackMeta{stream: tok[off], consumer: tok[off+1], sseq: sseq, dseq: dseq, ts: ts, pending: pending}, true
}
