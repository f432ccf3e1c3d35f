package keygroup

import (
	"fmt"
	"testing"
)

// TestOfGolden pins the key group function. If it fails, the change breaks
// every existing data directory: do not update the values, revert the change.
func TestOfGolden(t *testing.T) {
	tests := []struct {
		id   string
		k    int
		want int
	}{
		// XXH64("") = 0xef46db3751d8e999, the reference value of the xxHash spec.
		{"", 128, 0xe999 % 128},
		{"", 1024, 0xe999 % 1024},
		{"", 32768, 0xe999 % 32768},
		{"srv-0042", 128, 88},
		{"srv-0042", 32768, 13400},
		{"srv-0001", 128, 32},
		{"srv-0001", 1024, 800},
		{"rack-7", 128, 106},
		{"ünïcode", 128, 22},
		{"a", 128, 91},
		{"a", 1, 0},
	}
	for _, tt := range tests {
		if got := Of(tt.id, tt.k); got != tt.want {
			t.Errorf("Of(%q, %d) = %d, want %d", tt.id, tt.k, got, tt.want)
		}
	}
}

func TestOfSpread(t *testing.T) {
	const k, n = DefaultK, 128_000
	var counts [k]int
	for i := range n {
		counts[Of(fmt.Sprintf("srv-%06d", i), k)]++
	}
	mean := n / k
	for kg, c := range counts {
		if c < mean*8/10 || c > mean*12/10 {
			t.Errorf("key group %d holds %d of %d ids, want within 20%% of %d", kg, c, n, mean)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, k := range []int{1, 2, 64, 128, 4096, MaxK} {
		if err := Validate(k); err != nil {
			t.Errorf("Validate(%d) = %v", k, err)
		}
	}
	for _, k := range []int{-128, 0, 3, 100, 129, 2 * MaxK} {
		if err := Validate(k); err == nil {
			t.Errorf("Validate(%d) = nil, want an error", k)
		}
	}
}

func TestAssign(t *testing.T) {
	for _, k := range []int{1, 2, 8, 128, 1024} {
		for shards := 1; shards <= 2*k+3 && shards <= 300; shards++ {
			ranges := Assign(k, shards)
			if len(ranges) != shards {
				t.Fatalf("Assign(%d, %d) returned %d ranges", k, shards, len(ranges))
			}
			next := 0
			for i, r := range ranges {
				if r.Lo != next {
					t.Fatalf("Assign(%d, %d)[%d] = %v, want it to start at %d", k, shards, i, r, next)
				}
				if n := r.Len(); n < k/shards || n > k/shards+1 {
					t.Fatalf("Assign(%d, %d)[%d] = %v: %d key groups, want %d or %d", k, shards, i, r, n, k/shards, k/shards+1)
				}
				for kg := r.Lo; kg < r.Hi; kg++ {
					if !r.Contains(kg) {
						t.Fatalf("%v does not contain %d", r, kg)
					}
					if got := ShardOf(kg, k, shards); got != i {
						t.Fatalf("ShardOf(%d, %d, %d) = %d, want %d", kg, k, shards, got, i)
					}
				}
				next = r.Hi
			}
			if next != k {
				t.Fatalf("Assign(%d, %d) covers [0,%d), want [0,%d)", k, shards, next, k)
			}
		}
	}
}

func TestAssignExample(t *testing.T) {
	got := fmt.Sprint(Assign(128, 3))
	if want := "[[0,43) [43,86) [86,128)]"; got != want {
		t.Errorf("Assign(128, 3) = %s, want %s", got, want)
	}
}

func BenchmarkOf(b *testing.B) {
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("srv-%06d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Of(ids[i&1023], DefaultK)
	}
}
