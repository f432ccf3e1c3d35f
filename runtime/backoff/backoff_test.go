package backoff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestCeilingGrowsExponentiallyToTheCap(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: 30 * time.Second}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for n, w := range want {
		if got := p.Ceiling(n); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %s, want %s", n, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1000); got != p.Max {
		t.Errorf("Ceiling(1000) = %s, want the cap %s", got, p.Max)
	}
}

// TestDelayIsEqualJitter draws many delays per retry: each lies within
// [d/2, d], both halves of the range are used, and the smallest delay of
// retry n+1 is above the largest of retry n-1 (the growth is exponential,
// not merely random).
func TestDelayIsEqualJitter(t *testing.T) {
	p := Policy{Base: 10 * time.Millisecond, Max: 10 * time.Second}
	rng := rand.New(rand.NewPCG(1, 2))
	prevMax := time.Duration(0)
	for n := 0; n < 8; n++ {
		d := p.Ceiling(n)
		lo, hi := d, time.Duration(0)
		for i := 0; i < 2000; i++ {
			x := p.Delay(n, rng)
			if x < d/2 || x > d {
				t.Fatalf("Delay(%d) = %s, outside [%s, %s]", n, x, d/2, d)
			}
			lo, hi = min(lo, x), max(hi, x)
		}
		if lo > d/2+d/20 || hi < d-d/20 {
			t.Errorf("retry %d: delays spread over [%s, %s] only, want most of [%s, %s]", n, lo, hi, d/2, d)
		}
		if n >= 2 && lo <= prevMax/2 {
			t.Errorf("retry %d: smallest delay %s does not exceed half of the largest of retry %d (%s): no exponential growth", n, lo, n-1, prevMax)
		}
		prevMax = hi
	}
}

func TestRetrierCountsAndResets(t *testing.T) {
	r := Retrier{Policy: Policy{Base: time.Millisecond, Max: time.Second}}
	for i := 0; i < 5; i++ {
		if d := r.Next(); d < r.Policy.Ceiling(i)/2 {
			t.Fatalf("retry %d: %s below half of %s", i, d, r.Policy.Ceiling(i))
		}
	}
	if r.Retries() != 5 {
		t.Fatalf("Retries() = %d, want 5", r.Retries())
	}
	r.Reset()
	if d := r.Next(); d > time.Millisecond {
		t.Fatalf("after Reset the first delay is %s, want at most the base", d)
	}
}
