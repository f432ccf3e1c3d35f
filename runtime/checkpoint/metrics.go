package checkpoint

import (
	"github.com/prometheus/client_golang/prometheus"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// Metrics are the coordinator's Prometheus collectors.
type Metrics struct {
	completed      prometheus.Counter
	commitFailures prometheus.Counter
	duration       prometheus.Histogram
	bytes          prometheus.Histogram
	lastID         prometheus.Gauge
	egress         prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_checkpoints_total", Help: "Checkpoints completed."}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_checkpoint_commit_failures_total", Help: "Failed attempts to write a checkpoint (retried)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_checkpoint_duration_seconds", Help: "From a checkpoint's start to its manifest being durable.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		bytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "twinflow_checkpoint_bytes", Help: "Bytes written per checkpoint.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 12)}),
		lastID: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "twinflow_checkpoint_last_id", Help: "Id of the latest complete checkpoint."}),
		egress: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "twinflow_checkpoint_egress_records_total", Help: "Exactly-once egress records committed by checkpoints."}),
	}
	if reg != nil {
		reg.MustRegister(m.completed, m.commitFailures, m.duration, m.bytes, m.lastID, m.egress)
	}
	return m
}

func (m *Metrics) observe(man *storagev1.Manifest, egress int) {
	m.completed.Inc()
	m.duration.Observe(man.GetDurationMillis() / 1000)
	m.bytes.Observe(float64(man.GetBytes()))
	m.lastID.Set(float64(man.GetId()))
	m.egress.Add(float64(egress))
}
