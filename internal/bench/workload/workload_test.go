package workload

import (
	"math"
	"testing"
	"time"
)

func TestMsgRoundTrip(t *testing.T) {
	m := Msg{Flags: FlagSend | FlagEgress, Seq: 42, SendTo: ID(7)}
	b := m.Append(nil, 100)
	if len(b) != 100 {
		t.Fatalf("len = %d, want 100", len(b))
	}
	Stamp(b, 12345)
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	m.Published = 12345
	if got != m {
		t.Fatalf("got %+v, want %+v", got, m)
	}
	f, err := Parse(Forwarded(b))
	if err != nil || f.Flags != FlagForwarded || f.Seq != 42 || f.Published != 12345 {
		t.Fatalf("forwarded: %+v, %v", f, err)
	}
	if _, err := Parse(b[:5]); err == nil {
		t.Fatal("short message parsed")
	}
}

func TestPlanExpected(t *testing.T) {
	p := Plan{Addresses: 1000, Messages: 100_000, SendFraction: 0.1, EgressFraction: 0.01, Seed: 3}
	counts, sends, egress := p.Expected(p.Messages)
	var sum int64
	for _, c := range counts {
		sum += int64(c)
	}
	if sum != int64(p.Messages+sends) {
		t.Fatalf("sum %d != messages %d + sends %d", sum, p.Messages, sends)
	}
	if math.Abs(float64(sends)/1e5-0.1) > 0.01 || math.Abs(float64(egress)/1e5-0.01) > 0.003 {
		t.Fatalf("sends %d, egress %d: fractions off", sends, egress)
	}
	// Every address gets the same number of direct messages.
	direct := make([]int, p.Addresses)
	for i := range p.Messages {
		direct[p.Target(i)]++
	}
	for k, n := range direct {
		if n != p.Messages/p.Addresses {
			t.Fatalf("address %d got %d messages", k, n)
		}
	}
}

func TestHistogram(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b < prev || b > prev+1 {
			t.Fatalf("bucket of %d is %d after %d", v, b, prev)
		}
		prev = b
	}
	if b := bucketOf(math.MaxInt64); b >= numBuckets {
		t.Fatalf("bucket %d out of range", b)
	}
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}} {
		got := s.Quantile(c.q)
		if math.Abs(float64(got-c.want))/float64(c.want) > 0.032 {
			t.Errorf("q%.3f = %v, want %v", c.q, got, c.want)
		}
	}
	if s.Count() != 10000 || s.Quantile(1) != 10*time.Millisecond {
		t.Fatalf("count %d, max %v", s.Count(), s.Quantile(1))
	}
}
