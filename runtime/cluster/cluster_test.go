package cluster

import "testing"

func TestAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.12.0": true, "2.15.2": true, "3.0.0": true, "2.11.9": false, "1.99.0": false, "2.12.0-beta": true, "": false, "x.y": false} {
		if got := atLeast(v, 2, 12); got != want {
			t.Errorf("atLeast(%q, 2, 12) = %v, want %v", v, got, want)
		}
	}
}
