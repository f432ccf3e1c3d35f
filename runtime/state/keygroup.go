package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
)

// Key groups as units: what cluster mode needs to move a key group's data
// between a store and replicated storage. All of a key group's keys share
// its 2-byte prefix (keys.go), so its data is one key range.
//
// In cluster mode a store is a cache of the key groups its worker owns: the
// durable copy is the key group's changelog in NATS. The store records,
// per key group, the Position in that changelog its data reflects, so that
// a worker that gets a key group back restores only the changes since.

// Position is where a key group's data stands in the cluster's changelog of
// that key group: the sequence of the last change applied, and the epoch of
// the owner that wrote it.
type Position struct {
	Seq   uint64
	Epoch uint64
}

// KeyGroupBounds returns the range [lo, hi) of every key of key group kg.
func KeyGroupBounds(kg int) (lo, hi []byte) {
	lo = appendKG(nil, kg, 0)[:2]
	return lo, prefixEnd(lo)
}

// KeyGroup returns the writes of key group kg in o, in key order: each key
// with its value, or a nil value for a delete. o must not be written to
// during the iteration; a frozen overlay never is.
func (o *Overlay) KeyGroup(kg int) iter.Seq2[[]byte, []byte] {
	lo, hi := KeyGroupBounds(kg)
	return func(yield func(key, val []byte) bool) {
		o.m.Ascend(string(lo), func(k string, v []byte) bool {
			key := unsafe.Slice(unsafe.StringData(k), len(k))
			if string(key) >= string(hi) {
				return false
			}
			return yield(key, v)
		})
	}
}

func positionKey(kg int) []byte {
	return binary.BigEndian.AppendUint16([]byte{metaPrefix, metaPosition}, uint16(kg))
}

func encodePosition(p Position) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, p.Seq), p.Epoch)
}

// PutPosition records in o that key group kg's data is at p. Commit it in
// the same batch as the key group's data.
func PutPosition(o *Overlay, kg int, p Position) {
	o.Set(positionKey(kg), encodePosition(p))
}

// Position returns where key group kg's data stands; ok is false when the
// store has no position for it (it never held the key group in cluster
// mode, or a load of it did not finish).
func (s *Store) Position(kg int) (p Position, ok bool, err error) {
	return readPosition(s.db, kg)
}

func readPosition(r pebble.Reader, kg int) (Position, bool, error) {
	b, closer, err := r.Get(positionKey(kg))
	if errors.Is(err, pebble.ErrNotFound) {
		return Position{}, false, nil
	}
	if err != nil {
		return Position{}, false, fmt.Errorf("state: position of key group %d: %w", kg, err)
	}
	defer closer.Close()
	if len(b) != 16 {
		return Position{}, false, fmt.Errorf("state: position of key group %d is corrupt (%d bytes)", kg, len(b))
	}
	return Position{Seq: binary.BigEndian.Uint64(b), Epoch: binary.BigEndian.Uint64(b[8:])}, true, nil
}

// ScanKeyGroup calls fn for every key of key group kg in the store, in key
// order, and returns the key group's position, all as of one moment:
// commits during the scan are not seen. key and val are valid only during
// the call. An error from fn stops the scan and is returned.
func (s *Store) ScanKeyGroup(kg int, fn func(key, val []byte) error) (p Position, ok bool, err error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if p, ok, err = readPosition(snap, kg); err != nil {
		return Position{}, false, err
	}
	lo, hi := KeyGroupBounds(kg)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return Position{}, false, fmt.Errorf("state: scan key group %d: %w", kg, err)
	}
	for it.First(); it.Valid(); it.Next() {
		val, verr := it.ValueAndErr()
		if verr != nil {
			err = verr
			break
		}
		if err = fn(it.Key(), val); err != nil {
			_ = it.Close()
			return Position{}, false, err
		}
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Position{}, false, fmt.Errorf("state: scan key group %d: %w", kg, err)
	}
	return p, ok, nil
}

// loaderBatchBytes is the size at which a Loader writes a batch.
const loaderBatchBytes = 4 << 20

// Loader writes a key group's data into a store: a restore from the
// cluster. Its first batch removes the key group's position, so that a
// load that does not finish leaves the key group without one; Finish
// records the new position and syncs. Nothing else may write the key group
// meanwhile. A Loader is used from one goroutine.
type Loader struct {
	s     *Store
	kg    int
	lo    []byte
	hi    []byte
	b     *pebble.Batch
	count int
	err   error
}

// LoadKeyGroup starts loading key group kg. With clear, every key the store
// holds of kg is deleted first (the load is a whole copy); without, the
// load applies changes on top of what the store holds.
func (s *Store) LoadKeyGroup(kg int, clear bool) *Loader {
	lo, hi := KeyGroupBounds(kg)
	l := &Loader{s: s, kg: kg, lo: lo, hi: hi, b: s.db.NewBatch()}
	_ = l.b.Delete(positionKey(kg), nil)
	if clear {
		_ = l.b.DeleteRange(lo, hi, nil)
	}
	return l
}

// Set writes key = val. key must belong to the key group.
func (l *Loader) Set(key, val []byte) error {
	if err := l.check(key); err != nil {
		return err
	}
	_ = l.b.Set(key, val, nil)
	return l.flushIfFull()
}

// Delete deletes key. key must belong to the key group.
func (l *Loader) Delete(key []byte) error {
	if err := l.check(key); err != nil {
		return err
	}
	_ = l.b.Delete(key, nil)
	return l.flushIfFull()
}

// Count returns the number of keys set or deleted so far.
func (l *Loader) Count() int { return l.count }

func (l *Loader) check(key []byte) error {
	if l.err != nil {
		return l.err
	}
	if string(key) < string(l.lo) || string(key) >= string(l.hi) {
		return fmt.Errorf("state: load of key group %d: key %q belongs to another key group", l.kg, key)
	}
	l.count++
	return nil
}

func (l *Loader) flushIfFull() error {
	if l.b.Len() < loaderBatchBytes {
		return nil
	}
	if err := l.b.Commit(pebble.NoSync); err != nil {
		l.err = fmt.Errorf("state: load of key group %d: %w", l.kg, err)
		return l.err
	}
	l.b.Reset()
	return nil
}

// Finish records that the key group is at p and syncs everything loaded.
func (l *Loader) Finish(p Position) error {
	if l.err != nil {
		return l.err
	}
	_ = l.b.Set(positionKey(l.kg), encodePosition(p), nil)
	err := l.b.Commit(pebble.Sync)
	l.close()
	if err != nil {
		return fmt.Errorf("state: load of key group %d: %w", l.kg, err)
	}
	return nil
}

// Abort drops what was not written yet. The key group has no position
// afterwards if a batch was written; load it again before using it.
func (l *Loader) Abort() { l.close() }

func (l *Loader) close() {
	if l.b != nil {
		_ = l.b.Close()
		l.b = nil
	}
	if l.err == nil {
		l.err = errors.New("state: the load is over")
	}
}
