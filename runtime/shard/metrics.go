package shard

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the shards' Prometheus collectors, shared by all shards.
type Metrics struct {
	invocations     prometheus.Counter
	retries         prometheus.Counter
	deadLetters     prometheus.Counter
	egress          prometheus.Counter
	timersSet       prometheus.Counter
	timersFired     prometheus.Counter
	timersCancelled prometheus.Counter
	batchAddresses  prometheus.Histogram
	callSeconds     prometheus.Histogram
	latency         prometheus.Histogram
	pauseSeconds    prometheus.Histogram
	queuedBytes     *prometheus.GaugeVec
	mailboxes       *prometheus.GaugeVec
	saturated       *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		invocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_invocations_total", Help: "Messages whose effects were applied."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_invocation_retries_total", Help: "Address batches retried after a retryable failure."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_dead_letters_total", Help: "Messages and egress records sent to a dead-letter subject."}),
		egress: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_egress_records_total", Help: "Egress records produced by functions."}),
		timersSet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_set_total", Help: "Delayed messages scheduled."}),
		timersFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_fired_total", Help: "Delayed messages delivered."}),
		timersCancelled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_delayed_messages_cancelled_total", Help: "Delayed messages cancelled."}),
		batchAddresses: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_call_addresses", Help: "Address batches per function call.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		callSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_call_seconds", Help: "Duration of function calls.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_message_latency_seconds", Help: "From a message entering the platform to its effects being applied.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20)}),
		pauseSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_checkpoint_pause_seconds", Help: "How long a shard stopped processing to snapshot for a checkpoint.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18)}),
		queuedBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_queued_bytes", Help: "Bytes of messages queued in a shard's inbox and mailboxes."}, []string{"shard"}),
		mailboxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_active_addresses", Help: "Addresses with queued or in-flight messages."}, []string{"shard"}),
		saturated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "twinflow_shard_saturated", Help: "1 while a shard is at a memory bound and intake pauses."}, []string{"shard"}),
	}
	if reg != nil {
		reg.MustRegister(m.invocations, m.retries, m.deadLetters, m.egress, m.timersSet, m.timersFired,
			m.timersCancelled, m.batchAddresses, m.callSeconds, m.latency, m.pauseSeconds, m.queuedBytes,
			m.mailboxes, m.saturated)
	}
	return m
}
