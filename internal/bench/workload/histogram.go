package workload

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-linear buckets: exact below 64 ns,
// then 32 buckets per power of two, so a quantile is off by less than
// 3.2%. It is safe for concurrent use, and costs no allocation to record.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

const (
	subBits    = 6
	numBuckets = (64-subBits)<<(subBits-1) + 1<<subBits
)

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits
	return e<<(subBits-1) + int(v>>e)
}

// bucketMid returns the middle of bucket i's range.
func bucketMid(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := i>>(subBits-1) - 1
	s := int64(i&(1<<(subBits-1)-1)) + 1<<(subBits-1)
	return s<<e + (int64(1)<<e)/2
}

// Record adds one observation; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Reset forgets every observation. Observations recorded during the call
// may survive it.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
}

// Snapshot returns the counts, sparse: bucket index to count.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Buckets: map[int]uint64{}, Max: h.max.Load()}
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			s.Buckets[i] = n
		}
	}
	return s
}

// Snapshot is a histogram's counts at one moment, as JSON.
type Snapshot struct {
	Buckets map[int]uint64 `json:"buckets"`
	Max     int64          `json:"max_ns"`
}

// Count is the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Buckets {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q <= 1), or 0 without observations.
func (s Snapshot) Quantile(q float64) time.Duration {
	total := s.Count()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var seen uint64
	for i := range numBuckets {
		seen += s.Buckets[i]
		if seen >= rank {
			return time.Duration(min(bucketMid(i), s.Max))
		}
	}
	return time.Duration(s.Max)
}
