package cluster

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAssignGolden pins the assignment: workers of different versions must
// agree on it, so any change here is a breaking change of the cluster
// protocol.
func TestAssignGolden(t *testing.T) {
	got := Assign(16, []string{"a", "b", "c"})
	want := []int{1, 2, 1, 0, 0, 0, 0, 2, 2, 2, 2, 2, 1, 0, 1, 1}
	if !slices.Equal(got, want) {
		t.Fatalf("Assign(16, [a b c]) = %v, want %v", got, want)
	}
}

// TestAssignBalanced checks the bound on every worker's share: at most
// ceil(k/n) key groups, every key group owned by one of the workers.
func TestAssignBalanced(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 1))
	for _, k := range []int{1, 2, 16, 128, 1024} {
		for n := 1; n <= 20; n++ {
			ws := randomWorkers(r, n)
			owners := Assign(k, ws)
			if len(owners) != k {
				t.Fatalf("k=%d n=%d: %d owners", k, n, len(owners))
			}
			load := make([]int, n)
			for kg, w := range owners {
				if w < 0 || w >= n {
					t.Fatalf("k=%d n=%d: key group %d owned by worker index %d", k, n, kg, w)
				}
				load[w]++
			}
			if limit := (k + n - 1) / n; slices.Max(load) > limit {
				t.Fatalf("k=%d n=%d: loads %v exceed ceil(k/n) = %d", k, n, load, limit)
			}
		}
	}
}

// TestAssignDeterministic checks that the assignment depends on the set of
// workers only, not on the order in which a worker learned of them.
func TestAssignDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for range 50 {
		ws := randomWorkers(r, 1+r.IntN(12))
		want := owners(ws, Assign(128, ws))
		shuffled := slices.Clone(ws)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := owners(shuffled, Assign(128, shuffled)); !slices.Equal(got, want) {
			t.Fatalf("workers %v and %v give different assignments", ws, shuffled)
		}
	}
}

// TestAssignMovement measures the key groups that move when a worker leaves
// or joins between two workers that both stay: the moves that bounded load
// adds to those that cannot be avoided (the leaver's key groups, and the
// joiner's share). On average they stay under k/10, and under k/6 in the
// worst of the trials.
func TestAssignMovement(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct{ k, trials int }{{128, 50}, {1024, 10}} {
		k, trials := tc.k, tc.trials
		for _, n := range []int{2, 3, 5, 8, 16} {
			var sum, worst [2]int // leave, join
			for range trials {
				ws := randomWorkers(r, n)
				before := owners(ws, Assign(k, ws))

				leaver := ws[r.IntN(n)]
				rest := slices.DeleteFunc(slices.Clone(ws), func(w string) bool { return w == leaver })
				after := owners(rest, Assign(k, rest))
				between := 0
				for kg := range k {
					if after[kg] == leaver {
						t.Fatalf("key group %d stays with worker %s after it left", kg, leaver)
					}
					if before[kg] != leaver && after[kg] != before[kg] {
						between++
					}
				}
				sum[0] += between
				worst[0] = max(worst[0], between)

				joiner := randomWorkers(r, 1)[0]
				joined := append(slices.Clone(ws), joiner)
				after = owners(joined, Assign(k, joined))
				between, gained := 0, 0
				for kg := range k {
					switch {
					case after[kg] == joiner:
						gained++
					case after[kg] != before[kg]:
						between++
					}
				}
				// The others hold at most ceil(k/(n+1)) each; the joiner the rest.
				if least := k - n*((k+n)/(n+1)); gained < least {
					t.Fatalf("k=%d n=%d: the joining worker got %d key groups, less than the %d the others have no room for", k, n, gained, least)
				}
				sum[1] += between
				worst[1] = max(worst[1], between)
			}
			t.Logf("k=%d n=%d: moves between staying workers on a leave: mean %.1f worst %d; on a join: mean %.1f worst %d",
				k, n, float64(sum[0])/float64(trials), worst[0], float64(sum[1])/float64(trials), worst[1])
			for i, what := range []string{"leave", "join"} {
				if mean := float64(sum[i]) / float64(trials); mean > float64(k)/10 {
					t.Errorf("k=%d n=%d: %.1f key groups move between staying workers on a %s on average, more than k/10", k, n, mean, what)
				}
				if worst[i] > k/6 {
					t.Errorf("k=%d n=%d: %d key groups move between staying workers on one %s, more than k/6", k, n, worst[i], what)
				}
			}
		}
	}
}

func TestAssignPanics(t *testing.T) {
	for name, ws := range map[string][]string{"no workers": nil, "duplicate": {"a", "b", "a"}} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("Assign(%v) did not panic", ws)
				}
			}()
			Assign(8, ws)
		})
	}
}

// owners maps an assignment to worker ids.
func owners(ws []string, idx []int) []string {
	out := make([]string, len(idx))
	for kg, i := range idx {
		out[kg] = ws[i]
	}
	return out
}

func randomWorkers(r *rand.Rand, n int) []string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = fmt.Sprintf("%016x", r.Uint64())
	}
	return ws
}
