package state

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// ReadAddress returns the state values of addr in key group kg, read with
// one scan of the address's prefix, by name (nil when there are none).
// Values expired at the Unix millisecond now are left out and their keys
// returned in expired, for the caller to delete in its overlay. The values'
// Data are copies the caller owns. To read many addresses, a [Reader] is
// several times cheaper.
func ReadAddress(v View, kg int, addr Address, now int64) (vals map[string]Value, expired [][]byte, err error) {
	r := v.NewReader()
	vals, expired, err = r.ReadAddress(kg, addr, now)
	if cerr := r.Close(); err == nil && cerr != nil {
		return nil, nil, cerr
	}
	return vals, expired, err
}

// ReadValues returns the state values called names of addr in key group
// kg (the values a function type declares), by name (nil when there are
// none), with expired ones left out and their keys returned, as
// [ReadAddress] does. When the view's overlays hold every named value (the
// address was written since the last checkpoint) Pebble is not read at all.
// A [Reader] reads many addresses several times cheaper.
func ReadValues(v View, kg int, addr Address, names []string, now int64) (vals map[string]Value, expired [][]byte, err error) {
	r := v.NewReader()
	vals, expired, err = r.ReadValues(kg, addr, names, now)
	if cerr := r.Close(); err == nil && cerr != nil {
		return nil, nil, cerr
	}
	return vals, expired, err
}

// Reader reads the state values of many addresses through a view with one
// iterator, repositioned for each address: creating a Pebble iterator costs
// several times more than seeking one (BenchmarkReadAddress).
//
// A Reader sees the view's layers as they are at each read, and the store
// as it was at the Reader's first read. That equals the view for as long as
// no layer leaves it (a layer leaves once the store holds its writes, which
// the Reader might then miss): close the Reader when the view's layers
// change. A Reader is used from one goroutine.
type Reader struct {
	v      View
	it     *mergeIter
	lo, hi []byte
}

// NewReader returns a Reader of v.
func (v View) NewReader() *Reader { return &Reader{v: v} }

// ReadAddress is [ReadAddress] through the Reader.
func (r *Reader) ReadAddress(kg int, addr Address, now int64) (vals map[string]Value, expired [][]byte, err error) {
	return r.scan(kg, addr, nil, now)
}

// ReadValues is [ReadValues] through the Reader.
func (r *Reader) ReadValues(kg int, addr Address, names []string, now int64) (vals map[string]Value, expired [][]byte, err error) {
	if len(names) == 0 {
		return nil, nil, nil
	}
	// The overlays first: when they decide every name, Pebble has nothing
	// to add.
	r.lo = appendAddress(appendKG(r.lo[:0], kg, kindValue), addr)
	prefix := len(r.lo)
	var raws [4][]byte
	found := raws[:0]
	for _, name := range names {
		r.lo = append(r.lo[:prefix], name...)
		raw, ok := r.v.lookup(r.lo)
		if !ok {
			return r.scan(kg, addr, names, now)
		}
		found = append(found, raw)
	}
	for i, raw := range found {
		if raw == nil { // deleted
			continue
		}
		r.lo = append(r.lo[:prefix], names[i]...)
		if vals, expired, err = addValue(vals, expired, r.lo, names[i], raw, len(names), now); err != nil {
			return nil, nil, fmt.Errorf("state: value %q of %s: %w", names[i], addr, err)
		}
	}
	return vals, expired, nil
}

// scan reads the address's values with one scan of its prefix; only those
// in names, unless names is nil.
func (r *Reader) scan(kg int, addr Address, names []string, now int64) (vals map[string]Value, expired [][]byte, err error) {
	r.lo = appendAddress(appendKG(r.lo[:0], kg, kindValue), addr)
	r.hi = appendPrefixEnd(r.hi[:0], r.lo)
	if r.it == nil {
		if r.it, err = r.v.newIter(r.lo, r.hi); err != nil {
			return nil, nil, err
		}
	} else {
		r.it.reset(r.lo, r.hi)
	}
	n := len(r.lo)
	for it := r.it; it.valid(); it.next() {
		name := it.key[n:]
		if names != nil && !slices.Contains(names, string(name)) {
			continue
		}
		if vals, expired, err = addValue(vals, expired, it.key, string(name), it.val, max(len(names), 4), now); err != nil {
			return nil, nil, fmt.Errorf("state: value %q of %s: %w", name, addr, err)
		}
	}
	if err := r.it.error(); err != nil {
		return nil, nil, fmt.Errorf("state: read %s: %w", addr, err)
	}
	return vals, expired, nil
}

// addValue decodes the value raw of key into vals, or adds key to expired.
func addValue(vals map[string]Value, expired [][]byte, key []byte, name string, raw []byte, size int, now int64) (map[string]Value, [][]byte, error) {
	at, err := valueExpiresAt(raw)
	if err != nil {
		return vals, expired, err
	}
	if at != 0 && at <= now {
		return vals, append(expired, bytes.Clone(key)), nil
	}
	val, err := decodeValue(raw, true)
	if err != nil {
		return vals, expired, err
	}
	if vals == nil {
		vals = make(map[string]Value, size)
	}
	vals[name] = val
	return vals, expired, nil
}

// Close releases the Reader's iterator. The Reader can be used again
// afterwards, and then sees the store as it is then.
func (r *Reader) Close() error {
	if r.it == nil {
		return nil
	}
	err := r.it.close()
	r.it = nil
	return err
}

// PutValue sets the state value name of addr in key group kg. The value is
// stored as given: refresh its expiry first (see [Value.Refreshed]).
func PutValue(o *Overlay, kg int, addr Address, name string, val Value) {
	buf := make([]byte, 0, 3+addressLen(addr)+len(name)+encodedValueLen(val))
	buf = appendAddress(appendKG(buf, kg, kindValue), addr)
	buf = append(buf, name...)
	klen := len(buf)
	buf = encodeValue(buf, val)
	o.setOwned(buf, klen)
}

// DeleteValue deletes the state value name of addr in key group kg.
func DeleteValue(o *Overlay, kg int, addr Address, name string) {
	o.Delete(ValueKey(kg, addr, name))
}

// Touch restarts the expiry of the values in vals that expire after their
// address was last invoked (EXPIRY_MODE_AFTER_INVOKE), writing them to o
// and updating vals. The shard calls it when it invokes addr.
func Touch(o *Overlay, kg int, addr Address, vals map[string]Value, now int64) {
	for name, val := range vals {
		if val.Expiry != twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE {
			continue
		}
		val = val.Refreshed(now)
		vals[name] = val
		PutValue(o, kg, addr, name, val)
	}
}

// SweepExpired deletes expired state values of the key groups in r into o,
// examining at most limit values per call (no limit when limit <= 0), and
// removes the addresses left without state from the address index. It
// starts at the cursor from, nil for the beginning of r, and returns the
// cursor to pass next, or nil when it reached the end of r. A cursor that
// is not in r starts over. o must be the newest layer of v.
func SweepExpired(v View, o *Overlay, r keygroup.Range, from []byte, now int64, limit int) (next []byte, err error) {
	next, _, err = sweepExpired(v, o, r, from, now, limit)
	return next, err
}

// sweepExpired is [SweepExpired]; it also returns how many addresses it
// removed from the index.
func sweepExpired(v View, o *Overlay, r keygroup.Range, from []byte, now int64, limit int) (next []byte, unindexed int, err error) {
	next, dels, err := sweep(v, o, r, kindValue, valueExpiresAt, from, now, limit)
	if err != nil {
		return nil, 0, err
	}
	// The values of an address are adjacent: check each address once, after
	// its last deleted value.
	for i, k := range dels {
		kg, addr, _, err := DecodeValueKey(k)
		if err != nil {
			return nil, unindexed, err
		}
		if i+1 < len(dels) && bytes.HasPrefix(dels[i+1], AddressPrefix(kg, addr)) {
			continue
		}
		dropped, err := DropIndexIfEmpty(v, o, kg, addr)
		if err != nil {
			return nil, unindexed, err
		}
		if dropped {
			unindexed++
		}
	}
	return next, unindexed, nil
}

// sweep deletes the expired entries of one kind of the key groups in r, as
// SweepExpired describes, and returns the keys it deleted; expiresAt reads
// an entry's expiry (0: never).
func sweep(v View, o *Overlay, r keygroup.Range, kind byte, expiresAt func([]byte) (int64, error), from []byte, now int64, limit int) (next []byte, dels [][]byte, err error) {
	kg := r.Lo
	if from != nil {
		if fkg, ok := KeyGroupOf(from); ok && r.Contains(fkg) && len(from) > 2 && from[2] == kind {
			kg = fkg
		} else {
			from = nil
		}
	}
	examined := 0
	var it *mergeIter
	for ; kg < r.Hi && next == nil; kg++ {
		lo, hi := kindBounds(kg, kind)
		if from != nil && bytes.Compare(from, lo) > 0 {
			lo = from
		}
		from = nil
		if it == nil {
			if it, err = v.newIter(lo, hi); err != nil {
				return nil, nil, err
			}
		} else {
			it.reset(lo, hi)
		}
		for ; it.valid(); it.next() {
			if limit > 0 && examined == limit {
				next = bytes.Clone(it.key)
				break
			}
			examined++
			at, err := expiresAt(it.val)
			if err != nil {
				return nil, nil, errors.Join(fmt.Errorf("state: sweep %q: %w", it.key, err), it.close())
			}
			if at != 0 && at <= now {
				dels = append(dels, bytes.Clone(it.key))
			}
		}
	}
	if it != nil {
		if err := it.close(); err != nil {
			return nil, nil, err
		}
	}
	for _, k := range dels {
		o.Delete(k)
	}
	return next, dels, nil
}
