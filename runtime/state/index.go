package state

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twinflow/twinflow/runtime/keygroup"
)

// The address index
//
// State values are keyed by address, so the addresses of one function type
// cannot be listed without reading every value of every type. The address
// index is a second, small key per address that has state, laid out for
// listing by type in id order:
//
//	[kg][0x07][len(type) uvarint][type][id]   -> empty
//	[kg][0x08][type]                          -> number of indexed addresses, u64 BE
//
// Unlike enc(address), the id comes last without its length, so ids sort
// as strings and the ids with a given prefix are one key range. Both keys
// live in the key group of the address: they move with it, and they are
// written through the shard's overlay like the values themselves, so a
// checkpoint holds exactly the index of its state.
//
// The invariant: an address has an index entry if and only if it has at
// least one stored state value (expired values count until they are
// deleted). Whoever writes values keeps it: after writing a value of an
// address that had none, [PutIndex] (or [AddIndex] when it knows that);
// after deleting values, [DropIndexIfEmpty]. [Layers] does this for the
// values it deletes itself (expired values found by reads and sweeps); the
// shard does it for the mutations of a function's result, where it knows
// from the state it read for the call whether the address had any: an
// address that had state costs the index nothing, and one that had none
// costs two writes to the overlay and a read of its type's count.

// Key kinds of the address index.
const (
	kindIndex      = 0x07
	kindIndexCount = 0x08
)

// appendIndexPrefix appends [kg][0x07][len(type)][type].
func appendIndexPrefix(dst []byte, kg int, functionType string) []byte {
	dst = appendKG(dst, kg, kindIndex)
	dst = binary.AppendUvarint(dst, uint64(len(functionType)))
	return append(dst, functionType...)
}

// IndexKey returns the key of addr's entry in the address index of key
// group kg.
func IndexKey(kg int, addr Address) []byte {
	b := make([]byte, 0, 3+binary.MaxVarintLen64+len(addr.Type)+len(addr.ID))
	return append(appendIndexPrefix(b, kg, addr.Type), addr.ID...)
}

func indexCountKey(kg int, functionType string) []byte {
	return append(appendKG(nil, kg, kindIndexCount), functionType...)
}

// PutIndex adds addr to the address index of key group kg unless it is
// there already, and reports whether it added it. o must be the newest
// layer of v.
func PutIndex(v View, o *Overlay, kg int, addr Address) (bool, error) {
	key := IndexKey(kg, addr)
	if _, ok, err := v.Get(key); err != nil || ok {
		return false, err
	}
	return true, AddIndex(v, o, kg, addr)
}

// AddIndex adds addr, which the caller knows is not in the address index
// of key group kg, without looking: the first write of an address whose
// state was read and found empty. o must be the newest layer of v.
func AddIndex(v View, o *Overlay, kg int, addr Address) error {
	o.Set(IndexKey(kg, addr), []byte{})
	return addIndexCount(v, o, kg, addr.Type, 1)
}

// DropIndexIfEmpty removes addr from the address index of key group kg
// when it has no state value left in v, and reports whether it removed it.
// o must be the newest layer of v.
func DropIndexIfEmpty(v View, o *Overlay, kg int, addr Address) (bool, error) {
	prefix := AddressPrefix(kg, addr)
	empty := true
	err := v.Scan(prefix, prefixEnd(prefix), func(_, _ []byte) error {
		empty = false
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	if !empty {
		return false, nil
	}
	key := IndexKey(kg, addr)
	if _, ok, err := v.Get(key); err != nil || !ok {
		return false, err
	}
	o.Delete(key)
	return true, addIndexCount(v, o, kg, addr.Type, -1)
}

// addIndexCount adds delta to the count of indexed addresses of a function
// type in key group kg; a count that reaches zero is deleted.
func addIndexCount(v View, o *Overlay, kg int, functionType string, delta int64) error {
	key := indexCountKey(kg, functionType)
	n, err := indexCount(v, key)
	if err != nil {
		return err
	}
	n += delta
	if n <= 0 {
		o.Delete(key)
		return nil
	}
	o.Set(key, binary.BigEndian.AppendUint64(nil, uint64(n)))
	return nil
}

func indexCount(v View, key []byte) (int64, error) {
	b, ok, err := v.Get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("state: address count %q is corrupt", key)
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// CountAddresses returns the number of addresses of a function type that
// have state in the key groups of r: one read per key group.
func CountAddresses(v View, r keygroup.Range, functionType string) (int64, error) {
	var total int64
	for kg := r.Lo; kg < r.Hi; kg++ {
		n, err := indexCount(v, indexCountKey(kg, functionType))
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// ListAddresses returns, in id order, up to limit ids of the addresses of
// a function type that have state in the key groups of r, whose ids start
// with prefix and sort after the id after ("" for the first page).
//
// It reads each key group's index from the first candidate on, keeping the
// limit smallest ids found in a max-heap; once the heap is full, a key
// group is read only up to its largest id. A page therefore reads at most
// limit+1 entries per key group, however many addresses there are.
func ListAddresses(v View, r keygroup.Range, functionType, prefix, after string, limit int) ([]string, error) {
	ids, _, err := listAddresses(v, r, functionType, prefix, after, limit)
	return ids, err
}

// listAddresses is [ListAddresses]; it also returns how many index entries
// it read.
func listAddresses(v View, r keygroup.Range, functionType, prefix, after string, limit int) (ids []string, read int, err error) {
	if limit <= 0 || r.Len() <= 0 {
		return nil, 0, nil
	}
	var best idHeap
	var lo, hi []byte
	var it *mergeIter
	for kg := r.Lo; kg < r.Hi; kg++ {
		base := appendIndexPrefix(lo[:0], kg, functionType)
		n := len(base)
		hi = appendPrefixEnd(hi[:0], append(base, prefix...))
		lo = base
		if after != "" && after >= prefix {
			lo = append(append(lo, after...), 0) // the smallest id after after
		} else {
			lo = append(lo, prefix...)
		}
		if hi != nil && bytes.Compare(lo, hi) >= 0 {
			continue
		}
		if it == nil {
			if it, err = v.newIter(lo, hi); err != nil {
				return nil, 0, err
			}
		} else {
			it.reset(lo, hi)
		}
		for ; it.valid(); it.next() {
			read++
			id := it.key[n:]
			if len(best) == limit {
				if bytes.Compare(id, []byte(best[0])) >= 0 {
					break
				}
				heap.Pop(&best)
			}
			heap.Push(&best, string(id))
		}
		if err := it.error(); err != nil {
			return nil, 0, errors.Join(fmt.Errorf("state: listing %s: %w", functionType, err), it.close())
		}
	}
	if it != nil {
		if err := it.close(); err != nil {
			return nil, 0, err
		}
	}
	ids = make([]string, len(best))
	for i := len(ids) - 1; i >= 0; i-- {
		ids[i] = heap.Pop(&best).(string)
	}
	return ids, read, nil
}

// idHeap is a max-heap of ids: the largest is at the top.
type idHeap []string

func (h idHeap) Len() int           { return len(h) }
func (h idHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h idHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *idHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// buildIndex writes the address index of every address that has state,
// into o: the upgrade of a data directory of layout version 1, which had
// no index. It reads the values once, in key order.
func buildIndex(v View, k int, o *Overlay) (addresses int, err error) {
	type group struct {
		kg  int
		typ string
	}
	counts := map[group]int64{}
	var last Address
	lastKG := -1
	for kg := 0; kg < k; kg++ {
		lo, hi := kindBounds(kg, kindValue)
		err := v.Scan(lo, hi, func(key, _ []byte) error {
			_, addr, _, err := DecodeValueKey(key)
			if err != nil {
				return err
			}
			if kg == lastKG && addr == last {
				return nil
			}
			last, lastKG = addr, kg
			o.Set(IndexKey(kg, addr), []byte{})
			counts[group{kg, addr.Type}]++
			addresses++
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("state: building the address index: %w", err)
		}
	}
	for g, n := range counts {
		o.Set(indexCountKey(g.kg, g.typ), binary.BigEndian.AppendUint64(nil, uint64(n)))
	}
	return addresses, nil
}
