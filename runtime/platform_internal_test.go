package runtime

import (
	"math"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	// Bounds 1, 2, 4, +Inf; cumulative counts.
	h := histogram{count: 10, uppers: []float64{1, 2, 4, math.Inf(1)}, counts: []float64{2, 6, 10, 10}}
	for _, c := range []struct{ q, want float64 }{
		{0.1, 0.5},   // rank 1 of the 2 in [0,1]
		{0.5, 1.75},  // rank 5: 3rd of the 4 in (1,2]
		{0.99, 3.95}, // rank 9.9: 3.9th of the 4 in (2,4]
	} {
		if got := h.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// The observations of the last interval alone.
	d := h.minus(histogram{count: 4, uppers: h.uppers, counts: []float64{2, 4, 4, 4}})
	if d.count != 6 || d.quantile(0.5) != 2.5 {
		t.Errorf("difference: %d observations, median %v; want 6 and 2.5", int(d.count), d.quantile(0.5))
	}
	if (histogram{}).quantile(0.5) != 0 {
		t.Error("the quantile of no observations is not 0")
	}
	// Beyond the last finite bound: that bound.
	over := histogram{count: 2, uppers: []float64{1, math.Inf(1)}, counts: []float64{0, 2}}
	if got := over.quantile(0.5); got != 1 {
		t.Errorf("quantile beyond the last bound = %v, want 1", got)
	}
}
