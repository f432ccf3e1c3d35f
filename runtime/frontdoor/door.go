package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
)

// Config configures a Door. Zero values take the defaults.
type Config struct {
	Limits
	// Stream is the ingress stream the door writes into, named in
	// acknowledgements.
	Stream string
	// MaxPayload bounds a message's payload; default
	// router.DefaultMaxPayload.
	MaxPayload int
	// WriteTimeout bounds one write with its retries. Default 5s.
	WriteTimeout time.Duration
	// Read returns the stream sequence up to which the stream has been
	// read (the ingress reader's position), for MaxUnread. Nil: writes are
	// never held (a client, which cannot see the reader).
	Read func() uint64
	// Closing is what a message refused or failed because the door closed
	// is told. Default: the runtime is stopping.
	Closing string
	// Serves reports whether an endpoint serves a function type; messages
	// for others are refused as not found. Nil serves every type.
	Serves func(functionType string) bool
	// Logger receives write failures. Default slog.Default().
	Logger *slog.Logger
	// Metrics registers the door's collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock of MaxWait; default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.withDefaults()
	if c.MaxPayload <= 0 {
		c.MaxPayload = router.DefaultMaxPayload
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.Serves == nil {
		c.Serves = func(string) bool { return true }
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Closing == "" {
		c.Closing = "the runtime is stopping; send the message again, with the same idempotency key, once it runs"
	}
	return c
}

// Writer makes one encoded twinflow.v1.IngressBatch durable and returns
// the stream sequence that holds it. A write may be repeated after a
// failure: every message of a batch carries its idempotency key, so a
// batch stored twice is applied once.
type Writer interface {
	Write(ctx context.Context, batch []byte) (uint64, error)
}

// Result is the outcome of a message's write: the stream and sequence that
// hold it, or why it was not stored.
type Result struct {
	Stream string
	Seq    uint64
	// Key is the message's idempotency key, given or generated.
	Key string
	Err *Error
}

// Error is why the front door refused or could not store a message.
type Error struct {
	// Code is the Connect code (and through it the HTTP status).
	Code connect.Code
	// Reason is the reason NATS answers carry.
	Reason router.Reason
	// Detail says what was wrong and what to do.
	Detail string
	// RetryAfter, for an unavailable door, is when to send again.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Detail }

func refuse(code connect.Code, reason router.Reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *Error {
	e := refuse(connect.CodeUnavailable, router.ReasonUnavailable, format, args...)
	e.RetryAfter = time.Second
	return e
}

// Door packs the messages clients send concurrently into durable writes of
// batch envelopes, and acknowledges each message once the write holding it
// is durable.
//
// Design. A message is checked, given an idempotency key if it has none,
// and queued; the first message that finds a write slot free starts a
// writer goroutine, which takes everything queued (up to the limits of one
// write), writes it as one IngressBatch, answers every message of it, and
// goes on with what queued meanwhile until nothing waits. Under load each
// write therefore carries what arrived during the previous one (and, after
// a short linger, the next messages of the senders it acknowledged: see
// batcher.written), and the number of fsyncs stays that of the writes,
// whatever the number of clients: JetStream syncs every stored message
// when asked to, but does not group concurrent publishes into one sync. Acknowledging before the
// write is durable, or several writes per message, would lose either
// durability or the point. The idempotency keys make a write that failed
// safe to repeat, by the door or by its client: the targets drop repeats.
//
// Backpressure. Writes are held while more than MaxUnread of the door's
// messages wait unread in the stream, the queue is bounded, and a message
// that waits longer than MaxWait is refused: clients see unavailable, with
// a time to retry, rather than a queue without bound.
type Door struct {
	cfg Config
	w   Writer
	log *slog.Logger
	m   *metrics

	ticker *time.Ticker
	stop   chan struct{}
	wg     sync.WaitGroup // writers and the ticker

	// mu guards the batcher and what the door wrote; done callbacks are
	// never called under it.
	mu struct {
		sync.Mutex
		b       *batcher[*pending]
		closed  bool
		written []mark // writes not yet read from the stream, oldest first
		unread  int    // messages in written
		held    bool
		wake    *time.Timer // kicks a lingering write; nil until first needed
	}
}

// pending is a queued message and what to call when its write is over.
type pending struct {
	m    Message
	done func(Result)
}

// mark is a write: its sequence and how many messages it holds.
type mark struct {
	seq uint64
	n   int
}

// New returns a door that writes with w; Close stops it.
func New(cfg Config, w Writer) *Door {
	cfg = cfg.withDefaults()
	d := &Door{cfg: cfg, w: w, log: cfg.Logger.With("component", "frontdoor"), m: newMetrics(cfg.Metrics),
		ticker: time.NewTicker(5 * time.Millisecond), stop: make(chan struct{})}
	d.mu.b = newBatcher[*pending](cfg.Limits)
	d.wg.Add(1)
	go d.tick()
	return d
}

// Submit checks m and queues it for a write. It returns an error when it
// refuses m; otherwise done is called once with the outcome of the write
// (from another goroutine), after which the message is durable or was not
// stored. done must not block: it runs on the writer. m.Key is generated
// when empty.
func (d *Door) Submit(m Message, done func(Result)) *Error {
	if err := d.check(&m); err != nil {
		return err
	}
	size := itemSize(&m)
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return unavailable("%s", d.cfg.Closing)
	}
	if err := d.mu.b.add(&pending{m: m, done: done}, size, d.cfg.Now()); err != nil {
		waiting := d.mu.b.len()
		d.mu.Unlock()
		d.m.refusedFull.Inc()
		return unavailable("the front door is busy: %d messages wait for a durable write (intake may be paused); send the message again later, with the same idempotency key",
			waiting)
	}
	d.kick()
	d.mu.Unlock()
	return nil
}

// check validates m and gives it a key.
func (d *Door) check(m *Message) *Error {
	if err := router.ValidateAddress(m.Target.Type, m.Target.ID); err != nil {
		return refuse(connect.CodeInvalidArgument, router.ReasonBadID, "target: %v", err)
	}
	if err := router.ValidateTypename(m.Typename); err != nil {
		return refuse(connect.CodeInvalidArgument, router.ReasonBadTypename, "%v", err)
	}
	if len(m.Payload) > d.cfg.MaxPayload {
		return refuse(connect.CodeResourceExhausted, router.ReasonOversized, "payload of %d bytes exceeds the limit of %d bytes", len(m.Payload), d.cfg.MaxPayload)
	}
	if m.ReplyTo != "" {
		if err := router.ValidateReplySubject(m.ReplyTo); err != nil {
			return refuse(connect.CodeInvalidArgument, router.ReasonBadReplyTo, "%v", err)
		}
	}
	if m.Key == "" {
		m.Key = nuid.Next()
	} else if err := router.ValidateIdempotencyKey(m.Key); err != nil {
		return refuse(connect.CodeInvalidArgument, router.ReasonBadIdempotencyKey, "%v", err)
	}
	if !d.cfg.Serves(m.Target.Type) {
		return refuse(connect.CodeNotFound, router.ReasonNoEndpoint, "no endpoint of the module serves function type %s", m.Target.Type)
	}
	return nil
}

// kick starts a writer when a write can start, or arranges to be called
// again when a lingering write should start. Called with mu held.
func (d *Door) kick() {
	batch, retry := d.mu.b.take(d.held(), d.cfg.Now())
	if batch != nil {
		d.wg.Add(1)
		go d.writer(batch)
	} else if !retry.IsZero() {
		d.wakeAt(retry)
	}
}

// wakeAt kicks at t (by the wall clock's timer; the 5ms tick is too coarse
// for a linger of a millisecond or two). Called with mu held.
func (d *Door) wakeAt(t time.Time) {
	wait := t.Sub(d.cfg.Now())
	if d.mu.wake == nil {
		d.mu.wake = time.AfterFunc(wait, func() {
			d.mu.Lock()
			if !d.mu.closed {
				d.kick()
			}
			d.mu.Unlock()
		})
		return
	}
	d.mu.wake.Reset(wait)
}

// held reports whether writes are held: more of the door's messages than
// MaxUnread wait to be read. Called with mu held.
func (d *Door) held() bool {
	if d.cfg.Read == nil {
		return false
	}
	read := d.cfg.Read()
	for len(d.mu.written) > 0 && d.mu.written[0].seq <= read {
		d.mu.unread -= d.mu.written[0].n
		d.mu.written = d.mu.written[1:]
	}
	held := d.mu.unread > d.cfg.MaxUnread
	if held != d.mu.held {
		d.mu.held = held
		d.m.held.Set(b2f(held))
	}
	return held
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writer writes batch, answers its messages, and goes on with what waits.
func (d *Door) writer(batch []*pending) {
	defer d.wg.Done()
	buf := make([]byte, 0, 64<<10)
	for batch != nil {
		buf = buf[:0]
		for _, p := range batch {
			buf = appendItem(buf, &p.m)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.WriteTimeout)
		seq, err := d.w.Write(ctx, buf)
		cancel()
		took := time.Since(start)
		d.m.writeSeconds.Observe(took.Seconds())
		d.m.writeMessages.Observe(float64(len(batch)))
		var res Result
		if err != nil {
			d.m.writeFailures.Inc()
			d.log.Warn("durable write of a batch failed; its messages are refused as unavailable", "messages", len(batch), "err", err)
			res.Err = unavailable("the durable write failed (%v); send the message again, with the same idempotency key", err)
		} else {
			res.Stream, res.Seq = d.cfg.Stream, seq
		}
		sends := 0
		for _, p := range batch {
			res.Key = p.m.Key
			p.done(res)
			if p.m.ReplyTo == "" {
				sends++
			}
		}
		if err != nil {
			sends = 0 // refused senders may not come back soon
		}
		d.mu.Lock()
		d.mu.b.written(sends, d.cfg.Now())
		if err == nil && d.cfg.Read != nil {
			d.mu.written = append(d.mu.written, mark{seq: seq, n: len(batch)})
			d.mu.unread += len(batch)
		}
		var retry time.Time
		batch, retry = d.mu.b.take(d.held(), d.cfg.Now())
		if batch == nil && !retry.IsZero() && !d.mu.closed {
			d.wakeAt(retry)
		}
		d.m.queued.Set(float64(d.mu.b.len()))
		d.mu.Unlock()
	}
}

// tick refuses the messages that waited too long, and starts a write when
// writes were held and no longer are.
func (d *Door) tick() {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case <-d.ticker.C:
		}
		now := d.cfg.Now()
		d.mu.Lock()
		expired := d.mu.b.expire(now.Add(-d.cfg.MaxWait))
		if !d.mu.closed {
			d.kick()
		}
		d.m.queued.Set(float64(d.mu.b.len()))
		held := d.mu.held
		d.mu.Unlock()
		if len(expired) > 0 {
			why := "a durable write"
			if held {
				why = "intake, which is paused (the runtime is busy or stopping)"
			}
			d.m.refusedWait.Add(float64(len(expired)))
			fail(expired, unavailable("the message waited %s for %s; send it again later, with the same idempotency key", d.cfg.MaxWait, why))
		}
	}
}

func fail(ps []*pending, err *Error) {
	for _, p := range ps {
		p.done(Result{Key: p.m.Key, Err: err})
	}
}

// Close stops taking messages, refuses those still queued, and waits for
// the writes in flight and their answers, or for ctx.
func (d *Door) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.closed = true
	if d.mu.wake != nil {
		d.mu.wake.Stop()
	}
	queued := d.mu.b.flush()
	d.mu.Unlock()
	fail(queued, unavailable("%s", d.cfg.Closing))
	close(d.stop)
	d.ticker.Stop()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("front door: writes still in flight: %w", ctx.Err())
	}
}

// StreamWriter writes batches to a JetStream subject, retrying what may
// pass (no stream responding, a lost connection, a missing
// acknowledgement) until its context ends.
type StreamWriter struct {
	JS      jetstream.JetStream
	Subject string // router.BatchSubject
}

// Write publishes batch and returns its stream sequence.
func (w StreamWriter) Write(ctx context.Context, batch []byte) (uint64, error) {
	retry := backoff.Retrier{Policy: backoff.Policy{Base: 10 * time.Millisecond, Max: 500 * time.Millisecond}}
	msg := &nats.Msg{Subject: w.Subject, Data: batch}
	for {
		ack, err := w.JS.PublishMsg(ctx, msg)
		if err == nil {
			return ack.Sequence, nil
		}
		if natserr.PermanentPublish(err) {
			return 0, err
		}
		t := time.NewTimer(retry.Next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, errors.Join(ctx.Err(), err)
		}
	}
}
