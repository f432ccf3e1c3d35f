package runtime

import (
	"testing"

	"github.com/twinflow/twinflow/runtime/cluster"
)

// TestPositionsAcrossMoves steps the committer's positions through live
// moves: a reader that went back for a key group that joined never writes
// less than it had delivered of the others, one that stopped a key group's
// intake never writes past where it stopped, a key group that joined
// starts at its committed position, and one that left is forgotten.
func TestPositionsAcrossMoves(t *testing.T) {
	const in = "in"
	p := newPositions()
	p.commit(1, in, 100)
	check := func(what string, kg int, seq, want uint64, wantNew bool) {
		t.Helper()
		got, ok := p.next(kg, in, seq)
		if got != want || ok != wantNew {
			t.Errorf("%s: next(%d, %d) = %d, %v; want %d, %v", what, kg, seq, got, ok, want, wantNew)
		}
	}
	check("before any move", 1, 150, 150, true)

	// Key group 2 joins at a barrier where the reader had delivered up to
	// 200; the reader goes back to 50 for it.
	p.moved(&move{start: map[int]map[string]uint64{2: {in: 50}}}, []int{1}, map[string]uint64{in: 200})
	check("a key group that stayed, while the reader catches up", 1, 120, 200, true)
	check("the key group that joined, behind its position", 2, 40, 40, false)
	check("the key group that joined, past its position", 2, 120, 120, true)
	p.commit(1, in, 200)
	check("a key group that stayed, once the reader caught up", 1, 250, 250, true)

	// Key group 1's intake stops at a barrier at 300; it leaves later.
	p.moved(&move{stopIntake: []int{1}}, []int{1, 2}, map[string]uint64{in: 300})
	check("a key group whose intake stopped", 1, 400, 300, true)
	p.moved(&move{release: []int{1}}, []int{2}, map[string]uint64{in: 400})
	if got := p.of(1, in); got != 0 {
		t.Errorf("a key group that left still has position %d", got)
	}
	check("a key group that came back", 1, 500, 500, true)
}

// TestReaderViewAcrossMoves steps a reader's view through live moves: it
// goes back for a key group that joins, delivers what it had not of the
// others only once, and stops delivering a key group whose intake stopped
// or that left.
func TestReaderViewAcrossMoves(t *testing.T) {
	const in = "in"
	o := newOwnership(4)
	o.start[in] = make([]uint64, 4)
	o.owned[1], o.start[in][1] = true, 100
	v := o.clone()
	from := v.apply(&move{adopt: map[int]*cluster.Owned{2: nil}, start: map[int]map[string]uint64{2: {in: 50}}}, in, 200)
	if from != 50 {
		t.Errorf("a reader at 200 taking a key group at 50 goes on after %d; want 50", from)
	}
	for _, c := range []struct {
		kg   int
		seq  uint64
		want bool
	}{{1, 150, false}, {1, 200, false}, {1, 201, true}, {2, 50, false}, {2, 51, true}, {3, 300, false}} {
		if got := v.accepts(in, c.kg, c.seq); got != c.want {
			t.Errorf("after the join: accepts(%d, %d) = %v, want %v", c.kg, c.seq, got, c.want)
		}
	}
	if o.owned[2] {
		t.Errorf("a reader's view changed the pipeline's")
	}
	if from := v.apply(&move{stopIntake: []int{1}}, in, 300); from != 300 || v.accepts(in, 1, 301) {
		t.Errorf("after stopping key group 1's intake at 300: goes on after %d (want 300), accepts its 301: %v", from, v.accepts(in, 1, 301))
	}
	if v.apply(&move{release: []int{2}}, in, 400); v.accepts(in, 2, 401) {
		t.Errorf("a key group that left is still delivered")
	}
}
