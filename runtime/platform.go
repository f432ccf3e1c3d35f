package runtime

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protojson"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/console"
)

// The platform view: once a second the runtime samples its own metrics
// registry (gathered in process, never scraped over HTTP), its shards'
// status and its ingress streams' positions into a PlatformSample, keeps
// the last few minutes of them for GetPlatform, and sends each to the
// console's live feed. Rates are the difference between two gatherings, so
// they describe the last second; latency quantiles are taken over the last
// latencyWindow, so that a function called now and then still shows them.

const (
	sampleEvery      = time.Second
	samplesKept      = 300 // five minutes
	checkpointsKept  = 120
	streamInfoMaxAge = 500 * time.Millisecond
	latencyWindow    = 10 // samples
)

// platform samples the runtime and keeps the samples.
type platform struct {
	e       *Engine
	log     *slog.Logger
	fnCalls *prometheus.HistogramVec // call latency by function type

	mu struct {
		sync.Mutex
		samples     []*twinflowv1.PlatformSample // oldest first
		checkpoints []*twinflowv1.CheckpointInfo // oldest first
		subs        map[chan console.Event]struct{}
	}
	// The sampler's last gatherings, oldest first, latencyWindow+1 at most;
	// only the sampler uses them.
	history []*gathered
}

func newPlatform(e *Engine) *platform {
	p := &platform{e: e, log: e.log}
	p.fnCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "twinflow_function_call_seconds", Help: "Duration of the function calls that carried a function type, by function type.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"function_type"})
	e.reg.MustRegister(p.fnCalls)
	p.mu.subs = map[chan console.Event]struct{}{}
	return p
}

// observeCall records a call's duration for each function type it carried.
func (p *platform) observeCall(req *twinflowv1.InvokeRequest, d time.Duration) {
	var seen [4]string
	types := seen[:0]
	for _, b := range req.GetBatches() {
		if t := b.GetTarget().GetType(); !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	for _, t := range types {
		p.fnCalls.WithLabelValues(t).Observe(d.Seconds())
	}
}

// checkpointDone records a complete checkpoint.
func (p *platform) checkpointDone(m *storagev1.Manifest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.checkpoints = appendBounded(p.mu.checkpoints, checkpointInfo(m), checkpointsKept)
}

// run samples until ctx ends.
func (p *platform) run(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	defer p.close()
	// The first gathering is the baseline of the first sample's rates.
	if g, err := gather(p.e.reg, time.Now()); err == nil {
		p.history = append(p.history, g)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.sample(ctx)
		}
	}
}

// close ends the subscriptions: the console's event streams end with them.
func (p *platform) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ch := range p.mu.subs {
		close(ch)
	}
	p.mu.subs = nil
}

// sample takes one sample, keeps it and sends it to the subscribers.
func (p *platform) sample(ctx context.Context) {
	now := time.Now()
	g, err := gather(p.e.reg, now)
	if err != nil {
		p.log.Warn("gathering metrics for the console failed", "err", err)
		return
	}
	s := &twinflowv1.PlatformSample{AtUnixMillis: now.UnixMilli()}
	if n := len(p.history); n > 0 {
		p.rates(s, p.history[n-1], p.history[0], g)
	}
	p.history = appendBounded(p.history, g, latencyWindow+1)
	p.shards(s, g)
	p.streams(ctx, s)
	for _, pr := range p.e.readiness() {
		s.Problems = append(s.Problems, pr.check+": "+pr.reason)
	}
	data, err := protojson.Marshal(s)
	if err != nil {
		p.log.Warn("encoding a platform sample failed", "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.samples = appendBounded(p.mu.samples, s, samplesKept)
	for ch := range p.mu.subs {
		select {
		case ch <- console.Event{Name: "sample", Data: data}:
		default: // a slow reader misses a sample rather than hold the others up
		}
	}
}

func appendBounded[T any](s []T, v T, n int) []T {
	if len(s) >= n {
		s = append(s[:0], s[len(s)-n+1:]...)
	}
	return append(s, v)
}

// rates fills in what happened since the gathering prev, and the
// latencies since the older gathering old.
func (p *platform) rates(s *twinflowv1.PlatformSample, prev, old, cur *gathered) {
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		return
	}
	rate := func(a, b float64) float64 { return max(b-a, 0) / secs }
	s.IngressPerSecond = rate(prev.ingress, cur.ingress)
	s.EgressPerSecond = rate(prev.egress, cur.egress)
	s.DeadLettersPerSecond = rate(prev.ingressDead, cur.ingressDead)
	var types []string
	for t := range cur.invocations {
		types = append(types, t)
	}
	for t := range cur.fnCalls {
		if _, ok := cur.invocations[t]; !ok {
			types = append(types, t)
		}
	}
	slices.Sort(types)
	for _, t := range types {
		inv := rate(prev.invocations[t], cur.invocations[t])
		ret := rate(prev.retries[t], cur.retries[t])
		dead := rate(prev.deadLetters[t], cur.deadLetters[t])
		s.InvocationsPerSecond += inv
		s.DeadLettersPerSecond += dead
		f := &twinflowv1.FunctionSample{Type: t, InvocationsPerSecond: inv, RetriesPerSecond: ret, DeadLettersPerSecond: dead}
		if all := inv + ret + dead; all > 0 {
			f.ErrorRatio = (ret + dead) / all
		}
		f.CallsPerSecond = rate(prev.fnCalls[t].count, cur.fnCalls[t].count)
		d := cur.fnCalls[t].minus(old.fnCalls[t])
		f.P50Millis, f.P99Millis = 1000*d.quantile(0.5), 1000*d.quantile(0.99)
		s.Functions = append(s.Functions, f)
	}
	for _, ep := range p.e.cfg.Module.Endpoints {
		if slices.ContainsFunc(s.Endpoints, func(x *twinflowv1.EndpointSample) bool { return x.Url == ep.URL }) {
			continue
		}
		d := cur.endpoints[ep.URL].minus(old.endpoints[ep.URL])
		s.Endpoints = append(s.Endpoints, &twinflowv1.EndpointSample{
			Url: ep.URL, Reachable: true, CallsPerSecond: rate(prev.endpoints[ep.URL].count, cur.endpoints[ep.URL].count),
			P50Millis: 1000 * d.quantile(0.5), P99Millis: 1000 * d.quantile(0.99),
		})
	}
	for _, ep := range p.e.cfg.Module.Endpoints {
		for _, x := range s.Endpoints {
			if x.Url == ep.URL && !slices.Contains(x.Functions, ep.Functions) {
				x.Functions = append(x.Functions, ep.Functions)
			}
		}
	}
}

// shards fills in the shards' queues and the endpoints they cannot reach.
func (p *platform) shards(s *twinflowv1.PlatformSample, g *gathered) {
	for i, l := range p.e.pl().loops {
		st := l.Status()
		label := strconv.Itoa(i)
		s.Shards = append(s.Shards, &twinflowv1.ShardSample{
			Shard: int32(i), QueuedBytes: int64(g.queued[label]), ActiveAddresses: int64(g.active[label]),
			SpilledBytes: st.SpilledBytes, SpilledMessages: int64(st.SpilledMessages), FailingAddresses: int64(st.Failing),
			Saturated: l.Saturated(),
		})
		for _, d := range st.Unreachable {
			for _, x := range s.Endpoints {
				if x.Url == d.URL {
					x.Reachable, x.LastError = false, d.LastError
				}
			}
		}
	}
}

// streams fills in the ingress streams' lag: the stream's last sequence
// against the one its reader delivered.
func (p *platform) streams(ctx context.Context, s *twinflowv1.PlatformSample) {
	ctx, cancel := context.WithTimeout(ctx, streamInfoMaxAge)
	defer cancel()
	for _, r := range p.e.pl().reads {
		st := &twinflowv1.StreamSample{Stream: r.Name(), ReadSequence: r.Position()}
		if info, err := p.e.js.Stream(ctx, r.Name()); err == nil {
			st.LastSequence = info.CachedInfo().State.LastSeq
			if st.LastSequence > st.ReadSequence {
				st.Lag = st.LastSequence - st.ReadSequence
			}
		}
		if p.e.cl != nil {
			// The partitioned ingress holds other workers' key groups
			// too: the lag is what the reader's filter has left.
			st.Lag = r.Pending()
		}
		s.Streams = append(s.Streams, st)
	}
	if p.e.cl != nil {
		p.e.cl.reportLag(s.Streams)
	}
}

// subscribe returns a channel of the samples to come, and a function that
// ends the subscription.
func (p *platform) Subscribe() (<-chan console.Event, func()) {
	ch := make(chan console.Event, 4)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.subs == nil { // closed
		close(ch)
		return ch, func() {}
	}
	p.mu.subs[ch] = struct{}{}
	return ch, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, ok := p.mu.subs[ch]; ok {
			delete(p.mu.subs, ch)
			close(ch)
		}
	}
}

// GetPlatform answers with the samples and checkpoints kept, and the shards.
func (a *adminService) GetPlatform(context.Context, *connect.Request[twinflowv1.GetPlatformRequest]) (*connect.Response[twinflowv1.GetPlatformResponse], error) {
	e := a.e
	samples, ckpts := e.platform.view()
	if len(ckpts) == 0 { // none since the start: the ones retained before
		mans, err := e.store.Manifests()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		for _, m := range mans {
			ckpts = append(ckpts, checkpointInfo(m))
		}
	}
	resp := &twinflowv1.GetPlatformResponse{Samples: samples, Checkpoints: ckpts,
		StartedUnixMillis: e.started.UnixMilli(), KeyGroups: int32(e.cfg.KeyGroups)}
	for i, r := range e.ranges {
		resp.Shards = append(resp.Shards, &twinflowv1.ShardInfo{Shard: int32(i), KeyGroupLo: int32(r.Lo), KeyGroupHi: int32(r.Hi)})
	}
	return connect.NewResponse(resp), nil
}

// view returns the samples and checkpoints kept.
func (p *platform) view() ([]*twinflowv1.PlatformSample, []*twinflowv1.CheckpointInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.mu.samples), slices.Clone(p.mu.checkpoints)
}

// gathered is what the sampler reads of the metrics registry at a time.
type gathered struct {
	at                                time.Time
	ingress, egress, ingressDead      float64
	invocations, retries, deadLetters map[string]float64   // by function type
	fnCalls, endpoints                map[string]histogram // by function type, by endpoint URL
	queued, active                    map[string]float64   // by shard
}

func gather(reg prometheus.Gatherer, at time.Time) (*gathered, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	g := &gathered{at: at, invocations: map[string]float64{}, retries: map[string]float64{}, deadLetters: map[string]float64{},
		fnCalls: map[string]histogram{}, endpoints: map[string]histogram{}, queued: map[string]float64{}, active: map[string]float64{}}
	for _, mf := range mfs {
		byLabel := func(label string, into map[string]float64) {
			for _, m := range mf.GetMetric() {
				into[labelOf(m, label)] += value(m)
			}
		}
		switch mf.GetName() {
		case "twinflow_ingress_messages_total":
			g.ingress = sum(mf)
		case "twinflow_egress_records_total":
			g.egress = sum(mf)
		case "twinflow_ingress_dead_letters_total":
			g.ingressDead = sum(mf)
		case "twinflow_invocations_total":
			byLabel("function_type", g.invocations)
		case "twinflow_invocation_retries_total":
			byLabel("function_type", g.retries)
		case "twinflow_dead_letters_total":
			byLabel("function_type", g.deadLetters)
		case "twinflow_shard_queued_bytes":
			byLabel("shard", g.queued)
		case "twinflow_shard_active_addresses":
			byLabel("shard", g.active)
		case "twinflow_function_call_seconds":
			for _, m := range mf.GetMetric() {
				g.fnCalls[labelOf(m, "function_type")] = histogramOf(m.GetHistogram())
			}
		case "twinflow_call_seconds":
			for _, m := range mf.GetMetric() {
				g.endpoints[labelOf(m, "endpoint")] = histogramOf(m.GetHistogram())
			}
		}
	}
	return g, nil
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

func sum(mf *dto.MetricFamily) float64 {
	var s float64
	for _, m := range mf.GetMetric() {
		s += value(m)
	}
	return s
}

// histogram is a cumulative Prometheus histogram: counts of observations
// at or below each upper bound.
type histogram struct {
	count  float64
	uppers []float64
	counts []float64
}

func histogramOf(h *dto.Histogram) histogram {
	out := histogram{count: float64(h.GetSampleCount())}
	for _, b := range h.GetBucket() {
		out.uppers = append(out.uppers, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount()))
	}
	return out
}

// minus returns the observations of h that o had not seen.
func (h histogram) minus(o histogram) histogram {
	d := histogram{count: h.count - o.count, uppers: h.uppers, counts: slices.Clone(h.counts)}
	if len(o.counts) == len(h.counts) {
		for i := range d.counts {
			d.counts[i] -= o.counts[i]
		}
	}
	return d
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linearly within the bucket it falls in. It is 0 without
// observations.
func (h histogram) quantile(q float64) float64 {
	if h.count <= 0 || len(h.uppers) == 0 {
		return 0
	}
	rank := q * h.count
	i := sort.Search(len(h.counts), func(i int) bool { return h.counts[i] >= rank })
	if i == len(h.counts) {
		return h.uppers[len(h.uppers)-1] // beyond the last bound
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = h.uppers[i-1], h.counts[i-1]
	}
	upper := h.uppers[i]
	if math.IsInf(upper, 1) {
		return lower
	}
	in := h.counts[i] - below
	if in <= 0 {
		return upper
	}
	return lower + (upper-lower)*(rank-below)/in
}
