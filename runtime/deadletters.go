package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// deadLetterStream is the dead-letter stream, bounded as the module says:
// at a bound the oldest dead letters go, so that dead-lettering never
// blocks or fails.
func (e *Engine) deadLetterStream() (natsbus.StreamSpec, error) {
	limits := e.cfg.Module.DeadLetters.WithDefaults()
	// A dead letter carries the payload of the message, with headers.
	if need := int64(e.cfg.MaxPayload) + 64<<10; limits.MaxBytes < need {
		return natsbus.StreamSpec{}, fmt.Errorf("module: deadLetters.maxBytes (%d bytes) must hold at least one dead letter "+
			"of the largest message (%d bytes with its headers)", limits.MaxBytes, need)
	}
	// JetStream wants the duplicate window within the maximum age.
	return natsbus.StreamSpec{
		Name: DeadLetterStream, Subjects: []string{router.DeadLetterSubjects}, DuplicateWindow: min(e.cfg.DedupWindow, limits.MaxAge), AllowDirect: true,
		MaxAge: limits.MaxAge, MaxBytes: limits.MaxBytes, Discard: jetstream.DiscardOld,
	}, nil
}

// deadLetterCollector reports, when /metrics is scraped, what the
// dead-letter stream holds and how many dead letters its bounds removed.
// Nothing else removes them, so those are the ones before its first
// sequence.
type deadLetterCollector struct {
	js                         jetstream.JetStream
	discarded, messages, bytes *prometheus.Desc
}

func newDeadLetterCollector(js jetstream.JetStream) *deadLetterCollector {
	return &deadLetterCollector{
		js: js,
		discarded: prometheus.NewDesc("twinflow_dead_letters_discarded_total",
			"Dead letters removed from the dead-letter stream by its age and size bounds (module spec: deadLetters).", nil, nil),
		messages: prometheus.NewDesc("twinflow_dead_letter_stream_messages", "Dead letters in the dead-letter stream.", nil, nil),
		bytes:    prometheus.NewDesc("twinflow_dead_letter_stream_bytes", "Bytes in the dead-letter stream.", nil, nil),
	}
}

func (c *deadLetterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.discarded
	ch <- c.messages
	ch <- c.bytes
}

func (c *deadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return
	}
	info, err := s.Info(ctx)
	if err != nil {
		return
	}
	st := info.State
	discarded := uint64(0)
	if st.FirstSeq > 0 {
		discarded = st.FirstSeq - 1
	}
	ch <- prometheus.MustNewConstMetric(c.discarded, prometheus.CounterValue, float64(discarded))
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(st.Msgs))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
}
