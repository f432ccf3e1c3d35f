package frontdoor

import "github.com/prometheus/client_golang/prometheus"

// metrics are the front door's Prometheus collectors.
type metrics struct {
	writeSeconds  prometheus.Histogram
	writeMessages prometheus.Histogram
	writeFailures prometheus.Counter
	refusedFull   prometheus.Counter
	refusedWait   prometheus.Counter
	queued        prometheus.Gauge
	held          prometheus.Gauge
	requests      *prometheus.CounterVec // by door and code
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_frontdoor_write_seconds", Help: "Time of the front door's durable writes, with their retries.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
		writeMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_frontdoor_write_messages", Help: "Messages per durable write of the front door.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_frontdoor_write_failures_total", Help: "Durable writes of the front door that failed; their messages were refused as unavailable."}),
		refusedFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_frontdoor_refused_full_total", Help: "Messages refused because the front door's queue was full."}),
		refusedWait: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_frontdoor_refused_waited_total", Help: "Messages refused because they waited too long for a durable write."}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "twinflow_frontdoor_queued_messages", Help: "Messages waiting for a durable write."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "twinflow_frontdoor_held", Help: "1 while the front door holds its writes because the stream is not read (intake paused)."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twinflow_frontdoor_requests_total", Help: "Requests answered by the front door, by door (nats, http, connect), kind (send, call) and code."},
			[]string{"door", "kind", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.writeSeconds, m.writeMessages, m.writeFailures, m.refusedFull, m.refusedWait, m.queued, m.held, m.requests)
	}
	return m
}
