package state

import (
	"bytes"
	"errors"
	"fmt"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// ReadAddress returns the state values of addr in key group kg, read with
// one scan of the address's prefix, by name (nil when there are none).
// Values expired at the Unix millisecond now are left out and their keys
// returned in expired, for the caller to delete in its overlay. The values'
// Data are copies the caller owns.
func ReadAddress(v View, kg int, addr Address, now int64) (vals map[string]Value, expired [][]byte, err error) {
	prefix := AddressPrefix(kg, addr)
	err = v.Scan(prefix, prefixEnd(prefix), func(key, raw []byte) error {
		at, err := valueExpiresAt(raw)
		if err != nil {
			return fmt.Errorf("state: value %q of %s: %w", key[len(prefix):], addr, err)
		}
		if at != 0 && at <= now {
			expired = append(expired, bytes.Clone(key))
			return nil
		}
		val, err := decodeValue(raw, true)
		if err != nil {
			return fmt.Errorf("state: value %q of %s: %w", key[len(prefix):], addr, err)
		}
		if vals == nil {
			vals = make(map[string]Value, 4)
		}
		vals[string(key[len(prefix):])] = val
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return vals, expired, nil
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
// examining at most limit values per call (no limit when limit <= 0). It
// starts at the cursor from, nil for the beginning of r, and returns the
// cursor to pass next, or nil when it reached the end of r. A cursor that
// is not in r starts over. o should be the newest layer of v.
func SweepExpired(v View, o *Overlay, r keygroup.Range, from []byte, now int64, limit int) (next []byte, err error) {
	kg := r.Lo
	if from != nil {
		if fkg, ok := KeyGroupOf(from); ok && r.Contains(fkg) {
			kg = fkg
		} else {
			from = nil
		}
	}
	examined := 0
	var dels [][]byte
	var it *mergeIter
	for ; kg < r.Hi && next == nil; kg++ {
		lo, hi := kindBounds(kg, kindValue)
		if from != nil && bytes.Compare(from, lo) > 0 {
			lo = from
		}
		from = nil
		if it == nil {
			if it, err = v.newIter(lo, hi); err != nil {
				return nil, err
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
			at, err := valueExpiresAt(it.val)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("state: sweep %q: %w", it.key, err), it.close())
			}
			if at != 0 && at <= now {
				dels = append(dels, bytes.Clone(it.key))
			}
		}
	}
	if it != nil {
		if err := it.close(); err != nil {
			return nil, err
		}
	}
	for _, k := range dels {
		o.Delete(k)
	}
	return next, nil
}
