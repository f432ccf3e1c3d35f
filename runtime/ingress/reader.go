// Package ingress runs the ingress readers: each reads one JetStream stream
// in order, routes its messages to the shards that own their targets (the
// items of a batch envelope one by one, each with its idempotency key),
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
	Name    string // stream name; also the reader's name in manifests
	Ingress string // the router's ingress name
	Source  int    // barrier source number
	// Accept, in cluster mode, says whether a message at stream sequence
	// seq for the target id is this worker's to process: its key group is
	// owned here and had not read past seq. Nil accepts everything.
	Accept func(id string, seq uint64) bool
}

// Reader moves one stream's messages into the shards.
type Reader struct {
	cfg      Config
	bus      *natsbus.Reader
	router   *router.Router
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
func New(cfg Config, bus *natsbus.Reader, startAfter uint64, rt *router.Router, shards Shards, barriers Barriers, dlq Publisher, m *Metrics, log *slog.Logger) *Reader {
	r := &Reader{
		cfg: cfg, bus: bus, router: rt, shards: shards, barriers: barriers, dlq: dlq, m: m,
		log:     log.With("stream", cfg.Name),
		lastSeq: startAfter,
		batches: make([][]shard.Item, shards.Count()),
	}
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
	for s := 0; s < r.shards.Count(); s++ {
		r.shards.Inbox(s).Push(shard.Item{Source: r.cfg.Source, Barrier: id})
	}
	r.barriers.ReaderBarrier(id, r.cfg.Name, r.lastSeq)
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
	var dead, answers []*storagev1.EgressRecord
	taken, items, read := 0, 0, 0 // stream messages, envelopes pushed, messages read (a batch's items count)
	for taken < len(msgs) && items < maxRoundItems {
		msg := &msgs[taken]
		taken++
		m := router.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data, Reply: msg.Reply}
		routed, err := r.router.Route(r.cfg.Ingress, m)
		read++
		if err != nil {
			dl := r.deadLetter(msg, err)
			dead = append(dead, dl)
			if a := r.errorAnswer(msg.Reply, msg.Subject, dl); a != nil {
				answers = append(answers, a)
			}
			continue
		}
		published := msg.Time.UnixNano()
		if routed.Items != nil {
			for i := range routed.Items {
				it := &routed.Items[i]
				if it.Err != nil {
					dl := r.deadLetterItem(msg, m, i, it)
					dead = append(dead, dl)
					if a := r.errorAnswer(it.ReplyTo, msg.Subject, dl); a != nil {
						answers = append(answers, a)
					}
					continue
				}
				r.push(it.Target, shard.Envelope{Typename: it.Typename, Payload: it.Payload, ReplyTo: it.ReplyTo,
					Published: published, Key: r.key(it.Key)}, msg.Seq)
			}
			items += len(routed.Items)
			read += len(routed.Items) - 1
			continue
		}
		env := shard.Envelope{Typename: routed.Typename, Payload: routed.Payload, ReplyTo: routed.ReplyTo,
			Published: published, Key: r.key(routed.Key)}
		for _, t := range routed.Targets {
			r.push(t, env, msg.Seq)
		}
		items += len(routed.Targets)
	}
	for s, b := range r.batches {
		if len(b) > 0 {
			r.shards.Inbox(s).Push(b...)
			clear(b)
			r.batches[s] = b[:0]
		}
	}
	if len(dead) > 0 {
		// Dead letters carry a message id made of the stream and sequence,
		// so a replay after a crash does not publish them twice.
		if err := r.dlq.Publish(ctx, dead); err != nil {
			r.log.Error("publishing dead letters failed", "count", len(dead), "err", err)
		}
		// Requesters learn at once why no function will answer, instead of
		// waiting for their timeout.
		for _, a := range answers {
			r.dlq.Reply(a)
		}
	}
	r.lastSeq = msgs[taken-1].Seq
	r.readSeq.Store(r.lastSeq)
	r.m.messages.Add(float64(read))
	r.m.deadLetters.Add(float64(len(dead)))
	return taken
}

// push queues env for the shard owning target, unless cluster mode says the
// message at stream sequence seq is not this worker's (Config.Accept).
func (r *Reader) push(target router.Address, env shard.Envelope, seq uint64) {
	if r.cfg.Accept != nil && !r.cfg.Accept(target.ID, seq) {
		return
	}
	env.Target = shard.Address(target)
	s := r.shards.Locate(target.ID)
	r.batches[s] = append(r.batches[s], shard.Item{Source: r.cfg.Source, Msg: env})
}

// key qualifies a publisher's idempotency key with the stream: a message
// with a key is idempotent, its targets drop a repeat (see
// shard.Envelope.Key). Keys are the publisher's, per stream.
func (r *Reader) key(k string) string {
	if k == "" {
		return ""
	}
	return r.cfg.Name + "/" + k
}

func (r *Reader) deadLetter(msg *natsbus.Msg, err error) *storagev1.EgressRecord {
	subject, hdr := router.DeadLetter(err, router.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	r.dead.count++
	r.dead.last, r.dead.lastSubject = err.Error(), msg.Subject
	return &storagev1.EgressRecord{
		Subject: subject,
		Headers: flatten(hdr),
		Data:    msg.Data,
		MsgId:   "ingress-" + r.cfg.Name + "-" + strconv.FormatUint(msg.Seq, 10),
	}
}

// deadLetterItem returns the dead letter of item i of the batch msg: the
// item as an envelope, with the batch's headers and the item's index, and a
// message id of its own.
func (r *Reader) deadLetterItem(msg *natsbus.Msg, m router.Message, i int, it *router.Item) *storagev1.EgressRecord {
	subject, hdr := router.DeadLetterItem(it.Err, m, i)
	r.dead.count++
	r.dead.last, r.dead.lastSubject = it.Err.Error(), msg.Subject
	return &storagev1.EgressRecord{
		Subject: subject,
		Headers: flatten(hdr),
		Data:    it.Envelope,
		MsgId:   "ingress-" + r.cfg.Name + "-" + strconv.FormatUint(msg.Seq, 10) + "-" + strconv.Itoa(i),
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
func (r *Reader) errorAnswer(replyTo, subject string, dl *storagev1.EgressRecord) *storagev1.EgressRecord {
	if replyTo == "" || r.router.CheckReplyTo(replyTo) != nil {
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
