package natsbus

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fill publishes n messages of size bytes to subject.
func fill(b *testing.B, js jetstream.JetStream, subject string, n, size int) {
	b.Helper()
	if err := fillErr(js, subject, n, size); err != nil {
		b.Fatal(err)
	}
}

func fillErr(js jetstream.JetStream, subject string, n, size int) error {
	pub := NewPublisher(js, PublisherOptions{Logger: testLogger()})
	payload := make([]byte, size)
	recs := make([]Record, 0, 10000)
	for i := 0; i < n; {
		recs = recs[:0]
		for ; i < n && len(recs) < cap(recs); i++ {
			recs = append(recs, Record{Subject: subject, Data: payload})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := pub.Publish(ctx, recs)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkReader reads a stream of 100-byte messages that is already
// filled (catch-up), or while another connection publishes (live).
func BenchmarkReader(b *testing.B) {
	b.Run("catchup", func(b *testing.B) {
		s := startTestServer(b)
		_, js := connect(b, s.ClientURL())
		ensure(b, js, "B", "b.>")
		fill(b, js, "b.x", b.N, 100)
		r := newReader(b, js, "B", 0, ReaderOptions{})
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for got := 0; got < b.N; {
			batch, err := r.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			got += len(batch)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("live", func(b *testing.B) {
		s := startTestServer(b)
		_, js := connect(b, s.ClientURL())
		_, pjs := connect(b, s.ClientURL())
		ensure(b, js, "B", "b.>")
		r := newReader(b, js, "B", 0, ReaderOptions{})
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		go func() {
			if err := fillErr(pjs, "b.x", b.N, 100); err != nil {
				b.Error(err)
			}
		}()
		for got := 0; got < b.N; {
			batch, err := r.Next(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			got += len(batch)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}

// BenchmarkOrderedConsumer is the library's ordered consumer reading the
// same catch-up stream, for comparison with BenchmarkReader.
func BenchmarkOrderedConsumer(b *testing.B) {
	s := startTestServer(b)
	_, js := connect(b, s.ClientURL())
	ensure(b, js, "B", "b.>")
	fill(b, js, "b.x", b.N, 100)
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, "B", jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := it.Next(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPublisher publishes 100-byte records with message IDs in calls
// of 1000, with fsync on every write (the embedded default) and with a
// periodic sync.
func BenchmarkPublisher(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync time.Duration
	}{{"sync=always", 0}, {"sync=1m", time.Minute}} {
		b.Run(tc.name, func(b *testing.B) {
			s := startAt(b, b.TempDir(), -1, tc.sync)
			_, js := connect(b, s.ClientURL())
			ensure(b, js, "P", "p.>")
			pub := NewPublisher(js, PublisherOptions{Logger: testLogger()})
			payload := make([]byte, 100)
			recs := make([]Record, 0, 1000)
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; {
				recs = recs[:0]
				for ; i < b.N && len(recs) < cap(recs); i++ {
					recs = append(recs, Record{Subject: "p.x", Data: payload, MsgID: strconv.Itoa(i)})
				}
				if err := pub.Publish(ctx, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
