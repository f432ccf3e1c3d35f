package cluster

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Assign returns the owner of each of k key groups among the live workers:
// owners[kg] is an index into workers. It is a pure function of k and the
// set of worker ids (their order does not matter), so every worker computes
// the same assignment from the same membership, with no coordination.
//
// The assignment is rendezvous hashing with bounded load. Every pair of a
// key group and a worker has a score, XXH64 of the key group (2 bytes, big
// endian) followed by the worker id; pairs are taken strongest first, and a
// key group goes to the worker of its strongest pair that still has room.
// A worker has room for ceil(k/n) key groups, so no load exceeds it (and
// every load is k/n when n divides k).
//
// Without the bound (plain rendezvous hashing) exactly the key groups of a
// worker that leaves move, and exactly those a joining worker scores best
// move to it, but loads spread like a binomial: with 128 key groups on 3
// workers the largest share is 48 instead of 43 in the median case, and 53
// or more one time in ten. The bound costs a few extra moves when the
// membership changes: the key groups a leaving worker frees can fill
// another worker before the pairs of some of its own key groups come up,
// which then move on. With 128 key groups and 2 to 16 workers that is, on
// average, 0 to 9 key groups moving between staying workers on a leave and
// 2 to 5 on a join (assign_test.go measures it).
//
// The assignment is part of the cluster's protocol: workers of different
// versions must compute the same one, so a change of this function is a
// breaking change (TestAssignGolden pins it).
//
// Assign panics when workers is empty or holds a duplicate: membership
// never gives either.
func Assign(k int, workers []string) []int {
	if len(workers) == 0 {
		panic("cluster: Assign with no workers")
	}
	ids := slices.Clone(workers)
	sort.Strings(ids)
	if i := duplicate(ids); i >= 0 {
		panic(fmt.Sprintf("cluster: Assign with worker %q twice", ids[i]))
	}
	capacity := (k + len(ids) - 1) / len(ids)
	// prefs[kg] lists the workers in decreasing score for kg; each key group
	// waits in the heap with its best worker not yet tried.
	h := &pairHeap{}
	prefs := make([][]int, k)
	scores := make([][]uint64, k)
	for kg := range k {
		sc := make([]uint64, len(ids))
		order := make([]int, len(ids))
		for w, id := range ids {
			sc[w] = score(kg, id)
			order[w] = w
		}
		sort.Slice(order, func(a, b int) bool { return better(sc[order[a]], order[a], sc[order[b]], order[b]) })
		prefs[kg], scores[kg] = order, sc
		h.items = append(h.items, pair{kg: kg, w: order[0], score: sc[order[0]]})
	}
	heap.Init(h)
	load := make([]int, len(ids))
	next := make([]int, k) // index in prefs[kg] of the worker being tried
	owner := make([]int, k)
	for h.Len() > 0 {
		p := heap.Pop(h).(pair)
		if load[p.w] < capacity {
			owner[p.kg] = p.w
			load[p.w]++
			continue
		}
		next[p.kg]++
		w := prefs[p.kg][next[p.kg]]
		heap.Push(h, pair{kg: p.kg, w: w, score: scores[p.kg][w]})
	}
	// Translate indexes into the sorted ids back into the caller's order.
	pos := make(map[string]int, len(workers))
	for i, id := range workers {
		pos[id] = i
	}
	for kg, w := range owner {
		owner[kg] = pos[ids[w]]
	}
	return owner
}

// score is the rendezvous score of key group kg for worker id.
func score(kg int, id string) uint64 {
	var d xxhash.Digest
	d.Reset()
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(kg))
	_, _ = d.Write(b[:])
	_, _ = d.WriteString(id)
	return d.Sum64()
}

// better orders pairs: higher score first, ties (which XXH64 makes rare)
// broken by the worker's rank among the sorted ids, so that the order is
// total and Assign deterministic.
func better(sa uint64, wa int, sb uint64, wb int) bool {
	if sa != sb {
		return sa > sb
	}
	return wa < wb
}

func duplicate(sorted []string) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

// pair is a key group waiting for the worker w it scores best among those
// not yet tried.
type pair struct {
	kg    int
	w     int
	score uint64
}

// pairHeap pops the strongest pair first; equal pairs by key group.
type pairHeap struct{ items []pair }

func (h *pairHeap) Len() int { return len(h.items) }
func (h *pairHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if a.score != b.score || a.w != b.w {
		return better(a.score, a.w, b.score, b.w)
	}
	return a.kg < b.kg
}
func (h *pairHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *pairHeap) Push(x any)    { h.items = append(h.items, x.(pair)) }
func (h *pairHeap) Pop() any {
	old := h.items
	p := old[len(old)-1]
	h.items = old[:len(old)-1]
	return p
}
