package shard

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the shards' Prometheus collectors, shared by all shards.
// Invocations, retries and dead letters are labelled by function type, call
// durations by endpoint, so that an operator sees which function is slow or
// failing.
type Metrics struct {
	invocations     *prometheus.CounterVec
	retries         *prometheus.CounterVec
	deadLetters     *prometheus.CounterVec
	callSeconds     *prometheus.HistogramVec
	unreachable     *prometheus.GaugeVec
	egress          prometheus.Counter
	spilled         prometheus.Counter
	duplicates      prometheus.Counter
	timersSet       prometheus.Counter
	timersFired     prometheus.Counter
	timersCancelled prometheus.Counter
	batchAddresses  prometheus.Histogram
	latency         prometheus.Histogram
	pauseSeconds    prometheus.Histogram
	queuedBytes     *prometheus.GaugeVec
	mailboxes       *prometheus.GaugeVec
	saturated       *prometheus.GaugeVec
	spilledBytes    *prometheus.GaugeVec
	seenFilterBytes *prometheus.GaugeVec
	spilledMessages *prometheus.GaugeVec

	mu        sync.Mutex
	endpoints map[string]prometheus.Observer // by URL
}

// typeMetrics are the collectors of one function type, looked up once.
type typeMetrics struct {
	invocations, retries, deadLetters prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinflow_invocations_total", Help: "Messages whose effects were applied, by function type."}, []string{"function_type"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinflow_invocation_retries_total", Help: "Failed attempts of address batches that will be tried again, by function type."}, []string{"function_type"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinflow_dead_letters_total", Help: "Messages sent to the function dead-letter subject, by function type."}, []string{"function_type"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "twinflow_call_seconds", Help: "Duration of function calls, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"endpoint"}),
		unreachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_endpoint_unreachable", Help: "1 while a shard's last call to the endpoint failed without an answer."}, []string{"endpoint", "shard"}),
		egress: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_egress_records_total", Help: "Egress records produced by functions."}),
		spilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_spilled_messages_total", Help: "Messages moved out of memory into an address's backlog in the store."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_duplicates_dropped_total", Help: "Messages dropped because their target had seen their idempotency key."}),
		timersSet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_set_total", Help: "Delayed messages scheduled."}),
		timersFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_fired_total", Help: "Delayed messages delivered."}),
		timersCancelled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_cancelled_total", Help: "Delayed messages cancelled."}),
		batchAddresses: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_call_addresses", Help: "Address batches per function call.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_message_latency_seconds", Help: "From a message entering the platform to its effects being applied.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20)}),
		pauseSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_checkpoint_pause_seconds", Help: "How long a shard stopped processing to snapshot for a checkpoint.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18)}),
		queuedBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_queued_bytes", Help: "Bytes of messages held in memory in a shard's inbox and mailboxes."}, []string{"shard"}),
		mailboxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_active_addresses", Help: "Addresses with queued, spilled or in-flight messages."}, []string{"shard"}),
		saturated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_saturated", Help: "1 while a shard is at a memory or disk bound and intake pauses."}, []string{"shard"}),
		spilledBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_spilled_bytes", Help: "Bytes of address backlogs kept in the store rather than memory."}, []string{"shard"}),
		spilledMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_spilled_messages", Help: "Messages of address backlogs kept in the store rather than memory."}, []string{"shard"}),
		seenFilterBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_seen_filter_bytes", Help: "Memory of the filter that answers idempotency checks of new keys without reading the store."}, []string{"shard"}),
		endpoints: make(map[string]prometheus.Observer),
	}
	if reg != nil {
		reg.MustRegister(m.invocations, m.retries, m.deadLetters, m.callSeconds, m.unreachable, m.egress, m.spilled, m.duplicates,
			m.timersSet, m.timersFired, m.timersCancelled, m.batchAddresses, m.latency, m.pauseSeconds, m.queuedBytes,
			m.mailboxes, m.saturated, m.spilledBytes, m.spilledMessages, m.seenFilterBytes)
	}
	return m
}

func (m *Metrics) forType(functionType string) typeMetrics {
	return typeMetrics{
		invocations: m.invocations.WithLabelValues(functionType),
		retries:     m.retries.WithLabelValues(functionType),
		deadLetters: m.deadLetters.WithLabelValues(functionType),
	}
}

func (m *Metrics) forEndpoint(url string) prometheus.Observer {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.endpoints[url]
	if o == nil {
		o = m.callSeconds.WithLabelValues(url)
		m.endpoints[url] = o
	}
	return o
}

func (m *Metrics) endpointDown(url, shard string, down bool) {
	v := 0.0
	if down {
		v = 1
	}
	m.unreachable.WithLabelValues(url, shard).Set(v)
}
