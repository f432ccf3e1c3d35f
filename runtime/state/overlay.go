package state

import (
	"unsafe"

	"github.com/tidwall/btree"
)

// Overlay holds writes that are not yet committed: sets and deletes, in key
// order. A shard writes only into its current overlay; at a checkpoint it
// freezes the overlay, hands it to the coordinator, and starts a new one,
// reading through both (see [View]) until the frozen one is committed.
//
// An overlay is not safe for concurrent writes, nor for a write concurrent
// with reads. Once frozen it is read-only, and reads from any number of
// goroutines are safe.
type Overlay struct {
	// m maps keys to values; a nil value is a delete. Keys and values point
	// into one allocation per Set, which nothing mutates afterwards.
	m      btree.Map[string, []byte]
	bytes  int64
	frozen bool
}

// entryOverhead approximates the memory of one entry besides its key and
// value: the B-tree slot (string and slice headers) at about two thirds
// occupancy, plus allocation rounding.
const entryOverhead = 64

// NewOverlay returns an empty overlay.
func NewOverlay() *Overlay { return &Overlay{} }

// Set records that key has value val. Both are copied.
func (o *Overlay) Set(key, val []byte) {
	o.checkWritable()
	buf := make([]byte, len(key)+len(val))
	copy(buf, key)
	copy(buf[len(key):], val)
	k := unsafe.String(unsafe.SliceData(buf), len(key))
	o.put(k, buf[len(key):len(buf):len(buf)])
}

// Delete records that key is deleted: it hides any value of key in older
// overlays and in the store.
func (o *Overlay) Delete(key []byte) {
	o.checkWritable()
	o.put(string(key), nil)
}

func (o *Overlay) put(k string, v []byte) {
	if old, ok := o.m.Set(k, v); ok {
		o.bytes -= int64(len(k) + len(old) + entryOverhead)
	}
	o.bytes += int64(len(k) + len(v) + entryOverhead)
}

func (o *Overlay) checkWritable() {
	if o.frozen {
		panic("state: write to a frozen overlay")
	}
}

// Freeze makes o read-only: later writes panic. A shard freezes its overlay
// before handing it off, so that a stray write cannot race with the commit.
func (o *Overlay) Freeze() { o.frozen = true }

// Frozen reports whether o is frozen.
func (o *Overlay) Frozen() bool { return o.frozen }

// Bytes approximates the memory o holds, including per-entry overhead. It
// is what a shard checks against its memory budget.
func (o *Overlay) Bytes() int64 { return o.bytes }

// DataBytes is the size of o's keys and values: what committing it writes.
func (o *Overlay) DataBytes() int64 { return o.bytes - int64(o.m.Len())*entryOverhead }

// Len returns the number of keys o sets or deletes.
func (o *Overlay) Len() int { return o.m.Len() }

// lookup returns the entry of key: found reports whether o has one, and
// val is nil for a delete.
func (o *Overlay) lookup(key []byte) (val []byte, found bool) {
	return o.m.Get(unsafe.String(unsafe.SliceData(key), len(key)))
}

// each calls fn for every entry in key order; val is nil for a delete.
func (o *Overlay) each(fn func(key string, val []byte)) {
	o.m.Scan(func(k string, v []byte) bool {
		fn(k, v)
		return true
	})
}

// setOwned records buf[:klen] = buf[klen:], taking ownership of buf.
func (o *Overlay) setOwned(buf []byte, klen int) {
	o.checkWritable()
	o.put(unsafe.String(unsafe.SliceData(buf), klen), buf[klen:len(buf):len(buf)])
}
