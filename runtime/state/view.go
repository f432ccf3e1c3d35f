package state

import (
	"bytes"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tidwall/btree"
)

// View reads through a stack of overlays to the store: the newest layer
// that has a key decides, and a delete in a layer hides the key in all
// older layers and in the store.
//
// A shard's view is its current overlay, then the overlays it handed off
// and that are not yet committed, newest first, then the store. Because the
// store changes only by committing overlays, a view sees the same data
// before and after the commit of one of its layers.
type View struct {
	store  *Store
	layers []*Overlay
}

// NewView returns a view of the layers, newest first, over store. store may
// be nil for a view of overlays alone. A nil layer is skipped.
func NewView(store *Store, layers ...*Overlay) View {
	v := View{store: store, layers: make([]*Overlay, 0, len(layers))}
	for _, o := range layers {
		if o != nil {
			v.layers = append(v.layers, o)
		}
	}
	return v
}

// Get returns the value of key. The caller must not modify val; it stays
// valid after later writes.
func (v View) Get(key []byte) (val []byte, ok bool, err error) {
	for _, o := range v.layers {
		if val, found := o.lookup(key); found {
			return val, val != nil, nil
		}
	}
	if v.store == nil {
		return nil, false, nil
	}
	b, closer, err := v.store.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("state: get %q: %w", key, err)
	}
	val = bytes.Clone(b)
	if val == nil {
		val = []byte{}
	}
	return val, true, closer.Close()
}

// lookup returns the value of key in the newest layer that has an entry
// for it: found reports whether one has, and val is nil for a delete. The
// store is not read.
func (v View) lookup(key []byte) (val []byte, found bool) {
	for _, o := range v.layers {
		if val, found := o.lookup(key); found {
			return val, true
		}
	}
	return nil, false
}

// Scan calls fn for each key in [lo, hi) that has a value, in key order. A
// nil hi means no upper bound. key and val are valid only during the call;
// fn must not modify them nor write to the view's layers. An error from fn
// stops the scan and is returned.
func (v View) Scan(lo, hi []byte, fn func(key, val []byte) error) error {
	it, err := v.newIter(lo, hi)
	if err != nil {
		return err
	}
	for ; it.valid(); it.next() {
		if err := fn(it.key, it.val); err != nil {
			_ = it.close()
			return err
		}
	}
	return it.close()
}

// mergeIter merges the view's layers and the store in key order.
type mergeIter struct {
	ovs  []ovIter // newest first
	db   *pebble.Iterator
	dbOK bool
	hi   []byte
	key  []byte // nil when exhausted
	val  []byte
	err  error
}

type ovIter struct {
	it  btree.MapIter[string, []byte]
	ok  bool
	key []byte
}

func (o *ovIter) settle(ok bool, hi []byte) {
	o.ok = ok
	if ok {
		k := o.it.Key()
		o.key = unsafe.Slice(unsafe.StringData(k), len(k))
		if hi != nil && bytes.Compare(o.key, hi) >= 0 {
			o.ok = false
		}
	}
}

// newIter returns an iterator positioned at the first entry of [lo, hi).
// It merges every layer, empty or not, so that it stays correct when the
// layers are written to between repositionings (see reset).
func (v View) newIter(lo, hi []byte) (*mergeIter, error) {
	m := &mergeIter{ovs: make([]ovIter, len(v.layers))}
	for i, o := range v.layers {
		m.ovs[i] = ovIter{it: o.m.Iter()}
	}
	if v.store != nil {
		db, err := v.store.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return nil, fmt.Errorf("state: scan: %w", err)
		}
		m.db = db
	}
	m.seek(lo, hi, false)
	return m, nil
}

// reset repositions m at the first entry of [lo, hi), reusing its
// iterators. Writes to the layers since the last positioning are seen; the
// store is seen as when m was created.
func (m *mergeIter) reset(lo, hi []byte) {
	m.seek(lo, hi, true)
}

func (m *mergeIter) seek(lo, hi []byte, setBounds bool) {
	m.hi = hi
	for i := range m.ovs {
		oi := &m.ovs[i]
		oi.settle(oi.it.Seek(unsafe.String(unsafe.SliceData(lo), len(lo))), hi)
	}
	if m.db != nil {
		if setBounds {
			m.db.SetBounds(lo, hi)
		}
		m.dbOK = m.db.First()
	}
	m.find()
}

func (m *mergeIter) valid() bool { return m.key != nil }

// find positions m at the smallest key of any source that is not a delete.
func (m *mergeIter) find() {
	for {
		var min []byte
		win := -1
		for i := range m.ovs {
			if m.ovs[i].ok && (win < 0 || bytes.Compare(m.ovs[i].key, min) < 0) {
				min, win = m.ovs[i].key, i
			}
		}
		if m.dbOK {
			if k := m.db.Key(); win < 0 || bytes.Compare(k, min) < 0 {
				min, win = k, len(m.ovs)
			}
		}
		switch {
		case win < 0:
			m.key, m.val = nil, nil
			return
		case win < len(m.ovs):
			if val := m.ovs[win].it.Value(); val != nil {
				m.key, m.val = min, val
				return
			}
			m.advance(min) // a delete
		default:
			val, err := m.db.ValueAndErr()
			if err != nil {
				m.err = err
				m.key, m.val = nil, nil
				return
			}
			m.key, m.val = min, val
			return
		}
	}
}

// advance moves every source positioned at key past it. key may alias the
// store iterator's buffer, so the store iterator moves last.
func (m *mergeIter) advance(key []byte) {
	for i := range m.ovs {
		if o := &m.ovs[i]; o.ok && bytes.Equal(o.key, key) {
			o.settle(o.it.Next(), m.hi)
		}
	}
	if m.dbOK && bytes.Equal(m.db.Key(), key) {
		m.dbOK = m.db.Next()
	}
}

func (m *mergeIter) next() {
	m.advance(m.key)
	m.find()
}

// error returns the error that stopped m early, if any. An iterator that
// failed stays failed.
func (m *mergeIter) error() error {
	if m.err != nil {
		return m.err
	}
	if m.db != nil {
		return m.db.Error()
	}
	return nil
}

func (m *mergeIter) close() error {
	err := m.err
	if m.db != nil {
		err = errors.Join(err, m.db.Close())
		m.db = nil
	}
	if err != nil {
		return fmt.Errorf("state: scan: %w", err)
	}
	return nil
}
