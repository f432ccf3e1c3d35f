// Package keygroup maps function instance ids to key groups and key groups
// to shards.
//
// A key group is the unit of state placement, ownership and rescaling. Every
// address belongs to the key group
//
//	Of(id, K) = XXH64(id, seed 0) mod K
//
// where XXH64 is the 64-bit xxHash (https://xxhash.com, as implemented by
// github.com/cespare/xxhash/v2) of the UTF-8 bytes of the id, and K is the
// number of key groups of the deployment, a power of two fixed when the
// deployment is created. Only the id is hashed, not the function type, so
// all function types of one twin share a key group and a shard.
//
// The hash and K are part of every data directory's layout: state is stored
// under its key group, so changing either makes existing data unreachable.
// Treat a change of this function as a breaking change of the storage
// format.
//
// A worker runs P shards; [Assign] gives each a contiguous, balanced range of
// key groups, and [ShardOf] finds the owner of a key group in O(1).
package keygroup

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// DefaultK is the number of key groups of a deployment that does not choose
// one. Like Flink's default maximum parallelism it bounds how far a
// deployment can scale out (one shard per key group at most).
const DefaultK = 128

// MaxK is the largest supported number of key groups. Key groups are stored
// as 16-bit big-endian numbers.
const MaxK = 1 << 15

// Validate reports whether k is a usable number of key groups: a power of
// two from 1 to MaxK.
func Validate(k int) error {
	if k < 1 || k > MaxK || k&(k-1) != 0 {
		return fmt.Errorf("keygroup: %d key groups is not a power of two from 1 to %d", k, MaxK)
	}
	return nil
}

// Of returns the key group of the instance id among k key groups, in
// [0, k). k must be valid (see [Validate]).
func Of(id string, k int) int {
	return int(xxhash.Sum64String(id) & uint64(k-1))
}

// Range is the half-open interval [Lo, Hi) of key groups.
type Range struct {
	Lo, Hi int
}

// Contains reports whether kg is in r.
func (r Range) Contains(kg int) bool { return r.Lo <= kg && kg < r.Hi }

// Len returns the number of key groups in r.
func (r Range) Len() int { return r.Hi - r.Lo }

// String formats r as "[lo,hi)".
func (r Range) String() string { return fmt.Sprintf("[%d,%d)", r.Lo, r.Hi) }

// Assign splits k key groups into shards contiguous ranges whose sizes
// differ by at most one, in order: range i is [ceil(i·k/shards),
// ceil((i+1)·k/shards)). Every key group is in exactly one range, and
// [ShardOf] inverts the assignment. With more shards than key groups some
// ranges are empty, so callers usually cap shards at k.
//
// Assign panics if k is not valid or shards < 1: both come from validated
// configuration.
func Assign(k, shards int) []Range {
	if err := Validate(k); err != nil {
		panic(err)
	}
	if shards < 1 {
		panic(fmt.Sprintf("keygroup: Assign with %d shards", shards))
	}
	ranges := make([]Range, shards)
	for i := range ranges {
		ranges[i] = Range{Lo: ceilDiv(i*k, shards), Hi: ceilDiv((i+1)*k, shards)}
	}
	return ranges
}

// ShardOf returns the index of the range that [Assign](k, shards) gives key
// group kg: floor(kg·shards/k).
func ShardOf(kg, k, shards int) int {
	return kg * shards / k
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
