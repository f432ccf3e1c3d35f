package routing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

// Source is an ingress stream the router reads.
type Source struct {
	Stream  string // the stream's name
	Ingress string // the router's ingress name of its rules
}

// Config configures a Stage.
type Config struct {
	Cluster *cluster.Cluster
	JS      jetstream.JetStream
	Sources []Source
	Router  *router.Router
	// Holder names the router's worker incarnation, and Epoch is its
	// fencing epoch: the epoch of its lease of key group 0.
	Holder string
	Epoch  uint64
	// DLQ publishes the dead letters of what cannot be routed, and answers
	// the requesters among them.
	DLQ     ingress.Publisher
	Metrics *Metrics
	Log     *slog.Logger
	// TrimEvery is how often the source streams are purged below what is
	// routed. Default 1 s.
	TrimEvery time.Duration
}

// Stage is the routing stage of one router.
type Stage struct {
	cfg Config
	k   int
	log *slog.Logger

	// Touched by Run's goroutine only.
	heads   []uint64    // by key group: its subject's last sequence
	routed  []Positions // by key group: how far each stream is routed into it
	through Positions   // how far each stream is routed into every key group
	trimmed Positions
	retry   backoff.Retrier // paces writing a round again
}

// New returns a router's stage.
func New(cfg Config) *Stage {
	if cfg.TrimEvery <= 0 {
		cfg.TrimEvery = time.Second
	}
	return &Stage{cfg: cfg, k: cfg.Cluster.KeyGroups(), log: cfg.Log.With("component", "router", "epoch", cfg.Epoch),
		retry: backoff.Retrier{Policy: backoff.Policy{Base: 50 * time.Millisecond, Max: 2 * time.Second}}}
}

// Round bounds: a round is what the router publishes at once, one message
// (or a few, if large) per key group, in atomic batches.
const (
	maxRoundItems = 8192
	maxRoundBytes = 8 << 20
	// headerRoom is what a message leaves of the server's maximum payload
	// for its headers.
	headerRoom = 8 << 10
	// trimTimeout bounds a purge of a source stream.
	trimTimeout = 5 * time.Second
)

// batch is what one read of a source stream routed.
type batch struct {
	stream int // index in Config.Sources
	last   uint64
	items  []item
	bytes  int // about what the items take in routed messages
}

// item is one routed message.
type item struct {
	kg     int
	stream int
	seq    uint64 // of the source message
	env    shard.Envelope
}

// Run takes over as the cluster's router and routes until ctx ends (nil)
// or a router of a newer epoch takes over (a *FencedError).
func (s *Stage) Run(ctx context.Context) error {
	r := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}}
	for {
		err := s.run(ctx)
		var fenced *FencedError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &fenced):
			s.log.Warn("a router of a newer epoch took over; this one stops", "err", err)
			return err
		}
		s.log.Error("routing the ingress failed; taking over again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.Next()):
		}
	}
}

// run takes over, then reads and routes until ctx ends or a write fails
// in a way that takes reading the subjects again.
func (s *Stage) run(ctx context.Context) error {
	t := time.Now()
	st, err := s.takeover(ctx)
	if err != nil {
		return err
	}
	s.heads, s.routed, s.through = st.Heads, st.Routed, st.From
	s.trimmed = Positions{}
	s.cfg.Metrics.takeovers.Inc()
	s.log.Info("routing the ingress", "from", st.From.String(), "took", time.Since(t).Round(time.Millisecond))

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	ch := make(chan batch, 2*len(s.cfg.Sources))
	for i, src := range s.cfg.Sources {
		bus, err := natsbus.NewReader(rctx, s.cfg.JS, src.Stream, st.From[src.Stream], natsbus.ReaderOptions{Logger: s.cfg.Log})
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", src.Stream, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer bus.Close()
			s.read(rctx, i, bus, ch)
		}()
	}
	trim := time.NewTicker(s.cfg.TrimEvery)
	defer trim.Stop()
	for {
		var round []batch
		select {
		case <-ctx.Done():
			return nil
		case <-trim.C:
			s.trimSources(ctx)
			continue
		case b := <-ch:
			round = append(round, b)
		}
		n, size := len(round[0].items), round[0].bytes
	more:
		for n < maxRoundItems && size < maxRoundBytes {
			select {
			case b := <-ch:
				round = append(round, b)
				n, size = n+len(b.items), size+b.bytes
			default:
				break more
			}
		}
		if err := s.publish(ctx, round); err != nil {
			return err
		}
	}
}

// read routes one source stream's messages into batches, publishing the
// dead letters of what cannot be routed first.
func (s *Stage) read(ctx context.Context, stream int, bus *natsbus.Reader, out chan<- batch) {
	src := s.cfg.Sources[stream]
	dec := &ingress.StreamDecoder{Stream: src.Stream, Ingress: src.Ingress, Router: s.cfg.Router}
	var f ingress.Faults
	var failing time.Time
	for ctx.Err() == nil {
		msgs, err := bus.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failing.IsZero() {
				failing = time.Now()
				s.log.Error("reading an ingress stream failed; retrying every second", "stream", src.Stream, "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if !failing.IsZero() {
			s.log.Info("reading the ingress stream again", "stream", src.Stream, "failed_for", time.Since(failing).Round(time.Millisecond))
			failing = time.Time{}
		}
		if len(msgs) == 0 {
			continue
		}
		b := batch{stream: stream, last: msgs[len(msgs)-1].Seq}
		maxSize := int(s.cfg.JS.Conn().MaxPayload()) - routedOverhead
		for i := range msgs {
			msg := &msgs[i]
			large := 0
			dec.Decode(msg, func(env shard.Envelope) {
				size := envSize(&env)
				if size > maxSize {
					large++
					f.Dead = append(f.Dead, tooLarge(src.Stream, msg, large, size, maxSize))
					return
				}
				b.items = append(b.items, item{kg: keygroup.Of(env.Target.ID, s.k), stream: stream, seq: msg.Seq, env: env})
				b.bytes += size
			}, &f)
		}
		if len(f.Dead) > 0 {
			// Before the messages count as routed: the source stream is
			// purged below them.
			if err := s.cfg.DLQ.Publish(ctx, f.Dead); err != nil && ctx.Err() == nil {
				s.log.Error("publishing dead letters failed", "stream", src.Stream, "count", len(f.Dead), "err", err)
			}
			for _, a := range f.Answers {
				s.cfg.DLQ.Reply(a)
			}
			s.cfg.Metrics.deadLetters.Add(float64(len(f.Dead)))
			f = ingress.Faults{}
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
	}
}

// publish writes a round: for each key group its items, in source order,
// as one message (or a few, if large); the messages of many key groups in
// one atomic batch, the first message of each key group expecting its
// subject's last sequence. A batch is stored whole or not at all, so every
// message of a key group carries the positions of the whole round. A
// batch that fails is resolved by its subjects' last messages (OnRefused).
func (s *Stage) publish(ctx context.Context, round []batch) error {
	end := Positions{}
	byKG := map[int][]item{}
	for _, b := range round {
		name := s.cfg.Sources[b.stream].Stream
		end[name] = max(end[name], b.last)
		for _, it := range b.items {
			byKG[it.kg] = append(byKG[it.kg], it)
		}
	}
	kgs := slices.Sorted(maps.Keys(byKG))
	for _, kg := range kgs {
		// Batches of one stream arrive in order; streams interleave.
		slices.SortStableFunc(byKG[kg], func(a, b item) int { return a.stream - b.stream })
	}
	limit := int(s.cfg.JS.Conn().MaxPayload()) - headerRoom
	for len(kgs) > 0 {
		// As many key groups as fit in one atomic batch.
		var msgs []*nats.Msg
		expect := map[int]uint64{}
		var in []int         // key groups of the batch
		var lastMsg []int    // index of each one's last message
		var next []Positions // and its routed positions after the batch
		n := 0
		for n < len(kgs) {
			kg := kgs[n]
			items := slices.DeleteFunc(byKG[kg], func(it item) bool {
				return s.routed[kg].Covers(s.cfg.Sources[it.stream].Stream, it.seq)
			})
			byKG[kg] = items
			var chunks [][]item
			for len(items) > 0 {
				c := cut(items, limit)
				chunks, items = append(chunks, items[:c]), items[c:]
			}
			if len(msgs)+len(chunks) > maxBatchMsgs && len(msgs) > 0 {
				break
			}
			n++
			if len(chunks) == 0 {
				continue
			}
			routed := maps.Clone(s.routed[kg])
			routed.raise(end)
			expect[len(msgs)] = s.heads[kg]
			for _, c := range chunks {
				m, err := s.message(kg, c, routed)
				if err != nil {
					return err
				}
				msgs = append(msgs, m)
			}
			in, lastMsg, next = append(in, kg), append(lastMsg, len(msgs)-1), append(next, routed)
		}
		if len(msgs) > 0 {
			if err := s.append(ctx, msgs, expect, in, lastMsg, next); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
		}
		if len(msgs) == 0 || allWritten(in, s.routed, next) {
			kgs = kgs[n:]
		}
		// Otherwise some of the batch's key groups must be written again:
		// build the batch anew from what they do not hold.
	}
	s.through.raise(end)
	return nil
}

// maxBatchMsgs is the most messages of a round's atomic batch
// (nats-server's default max_batch_size is 1,000).
const maxBatchMsgs = 1000

// allWritten reports whether every key group of a batch holds its routed
// positions after the batch.
func allWritten(kgs []int, routed, next []Positions) bool {
	for i, kg := range kgs {
		for s, seq := range next[i] {
			if routed[kg][s] < seq {
				return false
			}
		}
	}
	return true
}

// append writes one atomic batch of a round, and on failure finds out from
// the subjects' last messages what became of it: stored (its answer lost),
// not stored (the caller writes again what is missing), or refused because
// a newer router took over (a *FencedError).
func (s *Stage) append(ctx context.Context, msgs []*nats.Msg, expect map[int]uint64, kgs, lastMsg []int, next []Positions) error {
	seqs, err := s.cfg.Cluster.AppendIn(ctx, msgs, expect)
	if err == nil {
		for i, kg := range kgs {
			s.heads[kg], s.routed[kg] = seqs[lastMsg[i]], next[i]
		}
		s.cfg.Metrics.publishes.Add(float64(len(msgs)))
		for _, m := range msgs {
			s.cfg.Metrics.routed.Add(float64(itemsIn(m.Data)))
		}
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	s.cfg.Metrics.refused.Inc()
	retry := false
	for _, kg := range kgs {
		last, lerr := s.last(ctx, kg)
		if lerr != nil {
			return fmt.Errorf("key group %d: after a write failed (%v): %w", kg, err, lerr)
		}
		what, rerr := OnRefused(s.cfg.Epoch, s.heads[kg], last)
		switch {
		case rerr != nil:
			return fmt.Errorf("key group %d: %w", kg, rerr)
		case what == Stop:
			return &FencedError{Epoch: s.cfg.Epoch, ByEpoch: last.Head.Epoch, By: last.Head.Holder, KeyGroup: kg}
		case what == Adopt:
			s.heads[kg] = last.Seq
			s.routed[kg].raise(last.Head.Routed)
		default:
			retry = true
		}
	}
	if retry {
		s.log.Debug("a round's write to the partitioned ingress was not stored; writing it again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(s.retry.Next()):
		}
	} else {
		s.retry.Reset()
	}
	return nil
}

// itemsIn returns the number of messages an encoded message holds.
func itemsIn(data []byte) uint64 {
	n, _ := binary.Uvarint(data)
	return n
}

// routedOverhead is what a routed message needs besides its messages: the
// headers (kind, router, epoch, and two positions per source stream) and
// the framing. A message that does not fit the server's maximum payload
// with it is dead-lettered: it could never be written.
const routedOverhead = 4 << 10

// envSize is about what env takes in a routed message.
func envSize(e *shard.Envelope) int {
	return len(e.Payload) + len(e.Typename) + len(e.Target.Type) + len(e.Target.ID) + len(e.ReplyTo) + len(e.Key) + 32
}

// tooLarge returns the dead letter of the n-th message of msg too large
// for the partitioned ingress.
func tooLarge(stream string, msg *natsbus.Msg, n, size, maxSize int) *storagev1.EgressRecord {
	err := fmt.Errorf("routing: a message of about %d bytes does not fit the partitioned ingress of the cluster (at most %d: "+
		"the NATS servers' max_payload less %d for the routing headers); lower the runtime's max payload, or raise max_payload",
		size, maxSize, routedOverhead)
	subject, hdr := router.DeadLetter(err, router.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	flat := make(map[string]string, len(hdr))
	for k, v := range hdr {
		if len(v) > 0 {
			flat[k] = v[0]
		}
	}
	return &storagev1.EgressRecord{Subject: subject, Headers: flat, Data: msg.Data,
		MsgId: "ingress-" + stream + "-" + strconv.FormatUint(msg.Seq, 10) + "-too-large-" + strconv.Itoa(n)}
}

// cut returns how many of items the next message holds: up to limit bytes,
// ending at a source message's end (every item of a source message for a
// key group is in one message), at least one source message.
func cut(items []item, limit int) int {
	size := 0
	for i := range items {
		if i > 0 && (items[i].stream != items[i-1].stream || items[i].seq != items[i-1].seq) && size > limit {
			return prevBoundary(items, i)
		}
		size += envSize(&items[i].env)
	}
	if size > limit {
		return prevBoundary(items, len(items))
	}
	return len(items)
}

// prevBoundary returns the start of the source message that ends at i, or
// i when that is the first one.
func prevBoundary(items []item, i int) int {
	j := i - 1
	for j > 0 && items[j-1].stream == items[i-1].stream && items[j-1].seq == items[i-1].seq {
		j--
	}
	if j == 0 {
		return i
	}
	return j
}

// message returns key group kg's message of items.
func (s *Stage) message(kg int, items []item, routed Positions) (*nats.Msg, error) {
	envs := make([]shard.Envelope, len(items))
	for i := range items {
		envs[i] = items[i].env
	}
	data, err := encodeItems(envs)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(s.cfg.Cluster.InSubject(kg))
	m.Data = data
	Head{Kind: kindRouted, Holder: s.cfg.Holder, Epoch: s.cfg.Epoch, Routed: routed, Through: s.through}.set(m.Header)
	return m, nil
}

// last reads the last message of key group kg's subject.
func (s *Stage) last(ctx context.Context, kg int) (Last, error) {
	m, err := s.cfg.Cluster.LastIn(ctx, kg)
	if err != nil || m == nil {
		return Last{}, err
	}
	h, err := ParseHead(m.Header)
	if err != nil {
		return Last{}, fmt.Errorf("%s message %d: %w", s.cfg.Cluster.InSubject(kg), m.Sequence, err)
	}
	return Last{Seq: m.Sequence, Head: h}, nil
}

// takeover reads the last message of every key group's subject, and
// appends this router's epoch marker to each, in atomic batches: from then
// on an older router's writes are refused.
func (s *Stage) takeover(ctx context.Context) (Start, error) {
	r := backoff.Retrier{Policy: backoff.Policy{Base: 50 * time.Millisecond, Max: 2 * time.Second}}
	for {
		lasts := make([]Last, s.k)
		for kg := range lasts {
			l, err := s.last(ctx, kg)
			if err != nil {
				return Start{}, err
			}
			lasts[kg] = l
		}
		st, err := Takeover(s.cfg.Epoch, lasts)
		if err != nil {
			return Start{}, err
		}
		err = s.appendMarkers(ctx, st)
		if err == nil {
			return st, nil
		}
		s.log.Debug("epoch markers not written; reading the subjects again", "err", err)
		select {
		case <-ctx.Done():
			return Start{}, ctx.Err()
		case <-time.After(r.Next()):
		}
	}
}

// appendMarkers writes the epoch markers, carrying each key group's
// positions forward (the next router reads only the last message), and
// sets st.Heads to their sequences.
func (s *Stage) appendMarkers(ctx context.Context, st Start) error {
	for lo := 0; lo < s.k; lo += maxBatchMsgs {
		hi := min(lo+maxBatchMsgs, s.k)
		msgs := make([]*nats.Msg, 0, hi-lo)
		for kg := lo; kg < hi; kg++ {
			m := nats.NewMsg(s.cfg.Cluster.InSubject(kg))
			Head{Kind: kindMarker, Holder: s.cfg.Holder, Epoch: s.cfg.Epoch, Routed: st.Routed[kg], Through: st.From}.set(m.Header)
			msgs = append(msgs, m)
		}
		expect := make(map[int]uint64, hi-lo)
		for i := range msgs {
			expect[i] = st.Heads[lo+i]
		}
		seqs, err := s.cfg.Cluster.AppendIn(ctx, msgs, expect)
		if err != nil {
			return err
		}
		copy(st.Heads[lo:hi], seqs)
	}
	return nil
}

// trimSources purges each source stream below what is routed into every
// key group: a new router starts after it, and the dead letters of what
// could not be routed were published before it counted as routed.
func (s *Stage) trimSources(ctx context.Context) {
	for stream, seq := range s.through {
		if seq <= s.trimmed[stream] {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, trimTimeout)
		st, err := s.cfg.JS.Stream(tctx, stream)
		if err == nil {
			err = st.Purge(tctx, jetstream.WithPurgeSequence(seq+1))
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("trimming an ingress stream failed; trying again", "stream", stream, "up_to", seq, "err", err)
			}
			continue
		}
		s.trimmed[stream] = seq
		s.cfg.Metrics.Purges.WithLabelValues("source").Inc()
	}
}

// Metrics are the routing stage's Prometheus collectors.
type Metrics struct {
	routed      prometheus.Counter
	publishes   prometheus.Counter
	refused     prometheus.Counter
	takeovers   prometheus.Counter
	deadLetters prometheus.Counter
	// Purges counts purges of the ingress streams by what they trim: a
	// source stream (by the router) or a key group's routed ingress (by
	// its owner).
	Purges *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		routed: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_routed_messages_total",
			Help: "Ingress messages the router wrote to the partitioned ingress (each item of a batch envelope counts)."}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_router_publishes_total",
			Help: "Messages the router wrote to the partitioned ingress (one per key group per round, or a few if large)."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_router_publishes_failed_total",
			Help: "Router writes refused (the subject moved on) or without an answer; each is resolved by the subject's last message."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_router_takeovers_total",
			Help: "Times this worker took over as the router (epoch markers written)."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_router_dead_letters_total",
			Help: "Ingress messages the router could not route (dead-lettered)."}),
		Purges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinflow_cluster_ingress_purges_total",
			Help: "Purges of ingress streams: source (a source stream, by the router), routed (a key group's partitioned ingress, by its owner)."}, []string{"stream"}),
	}
	if reg != nil {
		reg.MustRegister(m.routed, m.publishes, m.refused, m.takeovers, m.deadLetters, m.Purges)
	}
	return m
}
