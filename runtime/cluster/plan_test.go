package cluster

import (
	"slices"
	"testing"
)

// The key groups of 8 that Assign gives each of the workers a and b.
func splitAB(t *testing.T) (ofA, ofB []int) {
	t.Helper()
	for kg, w := range Assign(8, []string{"a", "b"}) {
		if w == 0 {
			ofA = append(ofA, kg)
		} else {
			ofB = append(ofB, kg)
		}
	}
	if len(ofA) != 4 || len(ofB) != 4 {
		t.Fatalf("Assign(8, [a b]) gives %v and %v, want 4 each", ofA, ofB)
	}
	return ofA, ofB
}

func TestPlanFor(t *testing.T) {
	a1, a2 := Holder{"a", "1"}, Holder{"a", "2"}
	b1 := Holder{"b", "1"}
	member := func(h Holder) MemberEntry {
		return MemberEntry{Member: Member{Worker: h.Worker, Incarnation: h.Incarnation}}
	}
	table := func(live []Holder, held map[Holder][]int) Table {
		t := Table{Members: map[string]MemberEntry{}, Leases: map[int]Lease{}}
		for _, h := range live {
			t.Members[h.Worker] = member(h)
		}
		rev := uint64(100)
		for h, kgs := range held {
			for _, kg := range kgs {
				rev++
				t.Leases[kg] = Lease{KeyGroup: kg, Holder: h, Revision: rev}
			}
		}
		return t
	}
	drained := func(t Table, workers ...string) Table {
		t.Draining = map[string]bool{}
		for _, w := range workers {
			t.Draining[w] = true
		}
		return t
	}
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	ofA, ofB := splitAB(t)

	type want struct{ owned, acquire, handOff, waiting []int }
	for _, tc := range []struct {
		name string
		self Holder
		t    Table
		want want
	}{
		{"alone in a new cluster: acquire everything", a1,
			table([]Holder{a1}, nil), want{acquire: all}},
		{"alone and holding everything: keep it", a1,
			table([]Holder{a1}, map[Holder][]int{a1: all}), want{owned: all}},
		{"b joined: a hands b its share", a1,
			table([]Holder{a1, b1}, map[Holder][]int{a1: all}), want{owned: ofA, handOff: ofB}},
		{"b joined: b waits for its share", b1,
			table([]Holder{a1, b1}, map[Holder][]int{a1: all}), want{waiting: ofB}},
		{"a died: b takes a's share over", b1,
			table([]Holder{b1}, map[Holder][]int{a1: ofA, b1: ofB}), want{owned: ofB, acquire: ofA}},
		{"a restarted: the new incarnation takes the old one's leases over", a2,
			table([]Holder{a2, b1}, map[Holder][]int{a1: ofA, b1: ofB}), want{acquire: ofA}},
		{"a restarted: b leaves a's share to it", b1,
			table([]Holder{a2, b1}, map[Holder][]int{a1: ofA, b1: ofB}), want{owned: ofB}},
		{"not a member any more: keep what is held, do nothing else", a1,
			table([]Holder{b1}, map[Holder][]int{a1: ofA}), want{owned: ofA}},
		{"a drained: a hands everything to b", a1,
			drained(table([]Holder{a1, b1}, map[Holder][]int{a1: ofA, b1: ofB}), "a"), want{handOff: ofA}},
		{"a drained: b waits for a's share", b1,
			drained(table([]Holder{a1, b1}, map[Holder][]int{a1: ofA, b1: ofB}), "a"), want{owned: ofB, waiting: ofA}},
		{"a drained and alone: it keeps everything", a1,
			drained(table([]Holder{a1}, map[Holder][]int{a1: all}), "a"), want{owned: all}},
		{"a drained mark of a worker that is not a member changes nothing", a1,
			drained(table([]Holder{a1, b1}, map[Holder][]int{a1: ofA, b1: ofB}), "c"), want{owned: ofA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanFor(8, tc.self, tc.t)
			got := want{KeyGroups(p.Owned), KeyGroups(p.Acquire), KeyGroups(p.HandOff), p.Waiting}
			for _, c := range []struct {
				what      string
				got, want []int
			}{{"owned", got.owned, tc.want.owned}, {"acquire", got.acquire, tc.want.acquire},
				{"hand off", got.handOff, tc.want.handOff}, {"waiting", got.waiting, tc.want.waiting}} {
				if !slices.Equal(c.got, c.want) && (len(c.got) > 0 || len(c.want) > 0) {
					t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

// TestPlanAcquiresAsSeen checks that an acquisition carries the revision of
// the lease as seen, so that the compare-and-set fails if it changed.
func TestPlanAcquiresAsSeen(t *testing.T) {
	a := Holder{"a", "1"}
	tb := Table{
		Members: map[string]MemberEntry{"a": {Member: Member{Worker: "a", Incarnation: "1"}}},
		Leases:  map[int]Lease{3: {KeyGroup: 3, Revision: 42}}, // released
	}
	p := PlanFor(4, a, tb)
	for _, l := range p.Acquire {
		want := uint64(0)
		if l.KeyGroup == 3 {
			want = 42
		}
		if l.Revision != want {
			t.Errorf("acquire key group %d at revision %d, want %d", l.KeyGroup, l.Revision, want)
		}
	}
	if len(p.Acquire) != 4 {
		t.Fatalf("acquire %v, want all 4 key groups", KeyGroups(p.Acquire))
	}
}

func TestTakenOver(t *testing.T) {
	a1, b1 := Holder{"a", "1"}, Holder{"b", "1"}
	tbl := Table{Leases: map[int]Lease{
		0: {KeyGroup: 0, Holder: a1, Revision: 10}, // as held
		1: {KeyGroup: 1, Holder: b1, Revision: 12}, // taken by b
		2: {KeyGroup: 2, Revision: 13},             // released
		3: {KeyGroup: 3, Holder: a1, Revision: 14}, // acquired again
		4: {KeyGroup: 4, Holder: b1, Revision: 3},  // the view is behind a's acquire
	}}
	held := []Lease{
		{KeyGroup: 3, Holder: a1, Revision: 6},
		{KeyGroup: 0, Holder: a1, Revision: 10},
		{KeyGroup: 1, Holder: a1, Revision: 7},
		{KeyGroup: 2, Holder: a1, Revision: 8},
		{KeyGroup: 4, Holder: a1, Revision: 9},
	}
	if got, want := TakenOver(held, tbl), []int{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("TakenOver = %v, want %v", got, want)
	}
}
