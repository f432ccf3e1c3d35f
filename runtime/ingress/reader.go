// Package ingress runs the ingress readers: each reads one JetStream stream
// in order, turns its messages into envelopes with a Decoder (the module's
// rules for the streams publishers write to, the items of a batch envelope
// one by one, each with its idempotency key; or, in cluster mode, the
// partitioned ingress), hands them to the shards that own their targets,
// dead-letters what cannot be routed, waits while a shard is at a memory
// bound, and emits checkpoint barriers in line with its messages.
package ingress

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

// Shards is what a reader needs of the shards.
type Shards interface {
	// Locate returns the shard owning an id.
	Locate(id string) int
	// Inbox returns a shard's inbox.
	Inbox(shard int) *shard.Inbox
	// Saturated reports whether a shard is at a memory bound.
	Saturated(shard int) bool
	// Count is the number of shards.
	Count() int
}

// Barriers receives the sequence a reader had delivered when it emitted a
// barrier.
type Barriers interface {
	ReaderBarrier(id uint64, name string, seq uint64)
}

// Publisher publishes dead letters, and answers the requests among them.
type Publisher interface {
	// Publish stores recs in JetStream.
	Publish(ctx context.Context, recs []*storagev1.EgressRecord) error
	// Reply publishes rec on core NATS, at most once.
	Reply(rec *storagev1.EgressRecord)
}

// Config configures a Reader.
type Config struct {
	Name   string // stream name; also the reader's name in manifests
	Source int    // barrier source number
	// AtBarrier, when set, is called just after the reader emitted barrier
	// id, having delivered up to lastSeq: when it returns ok, the reader
	// reads from seek on (cluster mode moves key groups in and out of a
	// running reader at a barrier).
	AtBarrier func(id, lastSeq uint64) (seek Seek, ok bool)
}

// Seek is where a reader goes on reading: after a stream sequence, on the
// subjects of a filter (see natsbus.ReaderOptions.FilterSubjects).
type Seek struct {
	After  uint64
	Filter []string
}

// A Decoder turns a stream message into envelopes for the shards: a
// [StreamDecoder] for the streams publishers write to, or, in cluster mode,
// the decoder of the routed ingress (runtime/routing).
type Decoder interface {
	// Decode calls push for each envelope of msg, its target set, and
	// appends what could not be routed to f. It returns how many messages
	// it read (each item of a batch envelope counts).
	Decode(msg *natsbus.Msg, push func(shard.Envelope), f *Faults) int
}

// BarrierDecoder is a Decoder that keeps something per barrier: the
// reader tells it of each barrier it emits, in line with the messages.
type BarrierDecoder interface {
	Barrier(id uint64)
}

// Faults are what messages could not be routed: their dead letters, and
// the error answers to the requesters among them.
type Faults struct {
	Dead    []*storagev1.EgressRecord
	Answers []*storagev1.EgressRecord
}

// Reader moves one stream's messages into the shards.
type Reader struct {
	cfg      Config
	bus      *natsbus.Reader
	dec      Decoder
	shards   Shards
	barriers Barriers
	dlq      Publisher
	log      *slog.Logger
	m        *Metrics

	barrier atomic.Uint64 // requested barrier, 0 when none
	paused  atomic.Bool   // intake stopped for shutdown
	failing atomic.Pointer[Failure]
	lastSeq uint64
	readSeq atomic.Uint64 // lastSeq, for other goroutines
	// pending are messages read from the stream and not yet delivered: a
	// round delivers about maxRoundItems.
	pending []natsbus.Msg
	batches [][]shard.Item
	pushed  int
	pushFn  func(shard.Envelope)
	faults  Faults
	// dead letters since they were last logged: they are logged together,
	// never one line per message
	dead struct {
		count             int
		last, lastSubject string
		logged            time.Time
	}
}

// deadLogEvery is how often dead letters are logged, at most.
const deadLogEvery = 5 * time.Second

// logDead logs the dead letters counted since the last log, at most every
// deadLogEvery.
func (r *Reader) logDead(now time.Time) {
	if r.dead.count == 0 || now.Sub(r.dead.logged) < deadLogEvery {
		return
	}
	r.log.Warn("ingress messages dead-lettered", "messages", r.dead.count, "last_error", r.dead.last,
		"last_subject", r.dead.lastSubject, "subject", router.DeadLetterSubject)
	r.dead.count, r.dead.last, r.dead.lastSubject, r.dead.logged = 0, "", "", now
}

// Failure is why a reader cannot read its stream, and since when.
type Failure struct {
	Err   error
	Since time.Time
}

// Failing returns why the reader cannot read its stream (a deleted stream,
// a NATS server that is gone), or nil while it reads.
func (r *Reader) Failing() *Failure { return r.failing.Load() }

// New returns a reader that starts after startAfter, the sequence recorded
// in the last checkpoint.
func New(cfg Config, bus *natsbus.Reader, startAfter uint64, dec Decoder, shards Shards, barriers Barriers, dlq Publisher, m *Metrics, log *slog.Logger) *Reader {
	r := &Reader{
		cfg: cfg, bus: bus, dec: dec, shards: shards, barriers: barriers, dlq: dlq, m: m,
		log:     log.With("stream", cfg.Name),
		lastSeq: startAfter,
		batches: make([][]shard.Item, shards.Count()),
	}
	r.pushFn = r.push
	r.readSeq.Store(startAfter)
	return r
}

// SetBarriers sets where barrier sequences go; the coordinator is built
// after its readers.
func (r *Reader) SetBarriers(b Barriers) { r.barriers = b }

// Name identifies the reader in checkpoint manifests.
func (r *Reader) Name() string { return r.cfg.Name }

// Position is the stream sequence of the last message the reader delivered
// to the shards or dead-lettered (or the one it started after): everything
// up to it has been read. It may be called from any goroutine.
func (r *Reader) Position() uint64 { return r.readSeq.Load() }

// Pending is how many messages of its filter the stream held past the
// last one read, when it was read (see natsbus.Reader.Pending).
func (r *Reader) Pending() uint64 { return r.bus.Pending() }

// RequestBarrier asks for barrier id between two batches.
func (r *Reader) RequestBarrier(id uint64) { r.barrier.Store(id) }

// Pause stops intake; barriers are still emitted.
func (r *Reader) Pause() { r.paused.Store(true) }

// Run reads until ctx ends.
func (r *Reader) Run(ctx context.Context) {
	wait := time.Millisecond
	for ctx.Err() == nil {
		r.emitBarrier()
		r.logDead(time.Now())
		if r.paused.Load() || r.anySaturated() {
			r.m.waits.Inc()
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			wait = min(2*wait, 20*time.Millisecond)
			continue
		}
		wait = time.Millisecond
		if len(r.pending) > 0 {
			r.pending = r.pending[r.deliver(ctx, r.pending):]
			continue
		}
		msgs, err := r.bus.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if r.failing.Load() == nil {
				r.failing.Store(&Failure{Err: err, Since: time.Now()})
				r.log.Error("reading stream failed; retrying every second", "err", err)
			}
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		if f := r.failing.Load(); f != nil {
			r.failing.Store(nil)
			r.log.Info("reading stream again", "failed_for", time.Since(f.Since).Round(time.Millisecond))
		}
		r.pending = msgs[r.deliver(ctx, msgs):]
	}
}

func (r *Reader) emitBarrier() {
	id := r.barrier.Swap(0)
	if id == 0 {
		return
	}
	if bd, ok := r.dec.(BarrierDecoder); ok {
		bd.Barrier(id)
	}
	for s := 0; s < r.shards.Count(); s++ {
		r.shards.Inbox(s).Push(shard.Item{Source: r.cfg.Source, Barrier: id})
	}
	r.barriers.ReaderBarrier(id, r.cfg.Name, r.lastSeq)
	if r.cfg.AtBarrier == nil {
		return
	}
	if to, ok := r.cfg.AtBarrier(id, r.lastSeq); ok {
		r.bus.Seek(to.After, to.Filter)
		r.pending = nil
		r.lastSeq = to.After
		r.readSeq.Store(to.After)
	}
}

func (r *Reader) anySaturated() bool {
	for s := 0; s < r.shards.Count(); s++ {
		if r.shards.Saturated(s) {
			return true
		}
	}
	return false
}

// maxRoundItems is about how many messages a reader hands the shards
// between two looks at their memory bounds: a batch envelope turns one
// stream message into many.
const maxRoundItems = 4096

// deliver routes msgs to the shards and returns how many of them it took:
// all of them, unless they hold more than maxRoundItems messages, so that
// the caller looks at the shards' memory bounds (and emits a requested
// barrier) before it delivers the rest.
func (r *Reader) deliver(ctx context.Context, msgs []natsbus.Msg) int {
	if len(msgs) == 0 {
		return 0
	}
	f := &r.faults
	taken, read := 0, 0 // stream messages, messages read (a batch's items count)
	r.pushed = 0
	for taken < len(msgs) && r.pushed < maxRoundItems {
		msg := &msgs[taken]
		taken++
		dead := len(f.Dead)
		read += r.dec.Decode(msg, r.pushFn, f)
		if len(f.Dead) > dead {
			r.dead.count += len(f.Dead) - dead
			r.dead.last, r.dead.lastSubject = f.Dead[len(f.Dead)-1].GetHeaders()[router.ErrorHeader], msg.Subject
		}
	}
	for s, b := range r.batches {
		if len(b) > 0 {
			r.shards.Inbox(s).Push(b...)
			clear(b)
			r.batches[s] = b[:0]
		}
	}
	if len(f.Dead) > 0 {
		// Dead letters carry a message id made of the stream and sequence,
		// so a replay after a crash does not publish them twice.
		if err := r.dlq.Publish(ctx, f.Dead); err != nil {
			r.log.Error("publishing dead letters failed", "count", len(f.Dead), "err", err)
		}
		// Requesters learn at once why no function will answer, instead of
		// waiting for their timeout.
		for _, a := range f.Answers {
			r.dlq.Reply(a)
		}
	}
	r.m.deadLetters.Add(float64(len(f.Dead)))
	clear(f.Dead)
	clear(f.Answers)
	f.Dead, f.Answers = f.Dead[:0], f.Answers[:0]
	r.lastSeq = msgs[taken-1].Seq
	r.readSeq.Store(r.lastSeq)
	r.m.messages.Add(float64(read))
	return taken
}

// push queues env for the shard owning its target.
func (r *Reader) push(env shard.Envelope) {
	s := r.shards.Locate(env.Target.ID)
	r.batches[s] = append(r.batches[s], shard.Item{Source: r.cfg.Source, Msg: env})
	r.pushed++
}

// StreamDecoder routes the messages of a stream publishers write to, by
// the module's ingress rules: the items of a batch envelope one by one,
// each with its idempotency key; what cannot be routed becomes a dead
// letter with a message id made of the stream and sequence.
type StreamDecoder struct {
	Stream  string // the stream's name
	Ingress string // the router's ingress name
	Router  *router.Router
}

// Decode implements [Decoder].
func (d *StreamDecoder) Decode(msg *natsbus.Msg, push func(shard.Envelope), f *Faults) int {
	m := router.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data, Reply: msg.Reply}
	routed, err := d.Router.Route(d.Ingress, m)
	if err != nil {
		dl := d.deadLetter(msg, err)
		f.Dead = append(f.Dead, dl)
		if a := d.errorAnswer(msg.Reply, msg.Subject, dl); a != nil {
			f.Answers = append(f.Answers, a)
		}
		return 1
	}
	published := msg.Time.UnixNano()
	if routed.Items != nil {
		for i := range routed.Items {
			it := &routed.Items[i]
			if it.Err != nil {
				dl := d.deadLetterItem(msg, m, i, it)
				f.Dead = append(f.Dead, dl)
				if a := d.errorAnswer(it.ReplyTo, msg.Subject, dl); a != nil {
					f.Answers = append(f.Answers, a)
				}
				continue
			}
			push(shard.Envelope{Target: shard.Address(it.Target), Typename: it.Typename, Payload: it.Payload,
				ReplyTo: it.ReplyTo, Published: published, Key: d.key(it.Key)})
		}
		return len(routed.Items)
	}
	env := shard.Envelope{Typename: routed.Typename, Payload: routed.Payload, ReplyTo: routed.ReplyTo,
		Published: published, Key: d.key(routed.Key)}
	for _, t := range routed.Targets {
		env.Target = shard.Address(t)
		push(env)
	}
	return 1
}

// key qualifies a publisher's idempotency key with the stream: a message
// with a key is idempotent, its targets drop a repeat (see
// shard.Envelope.Key). Keys are the publisher's, per stream.
func (d *StreamDecoder) key(k string) string {
	if k == "" {
		return ""
	}
	return d.Stream + "/" + k
}

func (d *StreamDecoder) deadLetter(msg *natsbus.Msg, err error) *storagev1.EgressRecord {
	subject, hdr := router.DeadLetter(err, router.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	return &storagev1.EgressRecord{
		Subject: subject,
		Headers: flatten(hdr),
		Data:    msg.Data,
		MsgId:   "ingress-" + d.Stream + "-" + strconv.FormatUint(msg.Seq, 10),
	}
}

// deadLetterItem returns the dead letter of item i of the batch msg: the
// item as an envelope, with the batch's headers and the item's index, and a
// message id of its own.
func (d *StreamDecoder) deadLetterItem(msg *natsbus.Msg, m router.Message, i int, it *router.Item) *storagev1.EgressRecord {
	subject, hdr := router.DeadLetterItem(it.Err, m, i)
	return &storagev1.EgressRecord{
		Subject: subject,
		Headers: flatten(hdr),
		Data:    it.Envelope,
		MsgId:   "ingress-" + d.Stream + "-" + strconv.FormatUint(msg.Seq, 10) + "-" + strconv.Itoa(i),
	}
}

func flatten(hdr map[string][]string) map[string]string {
	flat := make(map[string]string, len(hdr))
	for k, v := range hdr {
		if len(v) > 0 {
			flat[k] = v[0]
		}
	}
	return flat
}

// errorAnswer returns the answer to a request on replyTo that was dead-
// lettered as dl: no payload, and the dead letter's error headers. It
// returns nil for a message that is not a request, or whose reply subject
// may not be answered.
func (d *StreamDecoder) errorAnswer(replyTo, subject string, dl *storagev1.EgressRecord) *storagev1.EgressRecord {
	if replyTo == "" || d.Router.CheckReplyTo(replyTo) != nil {
		return nil
	}
	h := dl.GetHeaders()
	return &storagev1.EgressRecord{Subject: replyTo, Headers: map[string]string{
		router.ErrorHeader:           h[router.ErrorHeader],
		router.ErrorReasonHeader:     h[router.ErrorReasonHeader],
		router.OriginalSubjectHeader: subject,
	}}
}

// Metrics are the readers' Prometheus collectors.
type Metrics struct {
	messages    prometheus.Counter
	deadLetters prometheus.Counter
	waits       prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_ingress_messages_total", Help: "Messages read from ingress streams; each item of a batch envelope counts."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_ingress_dead_letters_total", Help: "Ingress messages that could not be routed."}),
		waits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_ingress_backpressure_waits_total", Help: "Times a reader waited for a shard at a memory bound."}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.deadLetters, m.waits)
	}
	return m
}
