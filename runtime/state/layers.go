package state

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// Layers is the state of one shard's key groups as the shard works on it:
// its current overlay, over the overlays it handed off to checkpoints that
// are not committed yet (newest first), over the store. Writes go to the
// current overlay; [Layers.HandOff] sets it aside for a checkpoint and
// starts a new one; [Layers.Committed] drops a handed-off overlay once the
// store holds its writes. Reads see every layer.
//
// Reads of addresses go through one Pebble iterator, reused until the
// layers change (see [Reader]). Layers is used from one goroutine.
type Layers struct {
	store      *Store
	log        *slog.Logger
	overlay    *Overlay
	committing []*Overlay // handed off, not yet committed, newest first
	v          View       // rebuilt when the layers change
	reader     *Reader    // reads addresses through v; nil until needed
	closing    sync.WaitGroup
	// unindexed counts the addresses removed from the address index: a
	// caller that saw an address with state before may trust that it is
	// still indexed while this has not changed.
	unindexed uint64

	seen      *seenFilter
	seenReads int // checks of a key that read the store (for tests)
	closed    atomic.Bool
}

// NewLayers returns the layers of a shard over store, with an empty
// current overlay. dedupWindow is how long idempotency marks live: the
// seen filter keeps its generations by it.
func NewLayers(store *Store, dedupWindow time.Duration, log *slog.Logger) *Layers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Layers{store: store, log: log, overlay: NewOverlay(), seen: newSeenFilter(dedupWindow)}
	l.changed()
	return l
}

// View reads through every layer.
func (l *Layers) View() View { return l.v }

// Overlay is the current overlay, where writes go.
func (l *Layers) Overlay() *Overlay { return l.overlay }

// UncommittedBytes is the memory held by the current overlay: the writes
// since the last hand-off.
func (l *Layers) UncommittedBytes() int64 { return l.overlay.Bytes() }

// HandOff sets the current overlay aside for a checkpoint, starts a new one
// and returns the old one. It stays readable until [Layers.Committed]; the
// caller may still write to it (mailbox snapshots) and then freezes it.
func (l *Layers) HandOff() *Overlay {
	o := l.overlay
	l.committing = append([]*Overlay{o}, l.committing...)
	l.overlay = NewOverlay()
	l.changed()
	return o
}

// Committed drops a handed-off overlay, which the store now holds.
func (l *Layers) Committed(o *Overlay) {
	for i, c := range l.committing {
		if c == o {
			l.committing = append(l.committing[:i], l.committing[i+1:]...)
			l.changed()
			return
		}
	}
}

// changed rebuilds the view and drops the reader, which saw the old layers.
func (l *Layers) changed() {
	layers := make([]*Overlay, 0, 1+len(l.committing))
	layers = append(layers, l.overlay)
	layers = append(layers, l.committing...)
	l.v = NewView(l.store, layers...)
	l.closeReader()
}

// Close releases the reader. The store must not be closed before.
func (l *Layers) Close() {
	l.closed.Store(true)
	l.closeReader()
	l.closing.Wait()
}

// closeReader drops the reader. Its iterator is closed on another
// goroutine: releasing the last reference to a Pebble version can wait for
// Pebble's own work, and stopped the shard for tens of milliseconds at a
// checkpoint.
func (l *Layers) closeReader() {
	r := l.reader
	if r == nil {
		return
	}
	l.reader = nil
	l.closing.Go(func() {
		if err := r.Close(); err != nil {
			l.log.Error("closing state reader", "err", err)
		}
	})
}

// ReadValues returns the values called names of addr, or all of its values
// when names is nil. Expired values are left out and deleted.
func (l *Layers) ReadValues(kg int, addr Address, names []string, now int64) (map[string]Value, error) {
	if l.reader == nil {
		l.reader = l.v.NewReader()
	}
	var (
		vals    map[string]Value
		expired [][]byte
		err     error
	)
	if names == nil {
		vals, expired, err = l.reader.ReadAddress(kg, addr, now)
	} else {
		vals, expired, err = l.reader.ReadValues(kg, addr, names, now)
	}
	if err != nil {
		l.closeReader() // start afresh after an error
		return nil, err
	}
	for _, k := range expired {
		l.overlay.Delete(k)
	}
	if len(expired) > 0 {
		if err := l.UnindexIfEmpty(kg, addr); err != nil {
			return nil, err
		}
	}
	return vals, nil
}

// PutValue writes a value of addr.
func (l *Layers) PutValue(kg int, addr Address, name string, v Value) {
	PutValue(l.overlay, kg, addr, name, v)
}

// DeleteValue deletes a value of addr.
func (l *Layers) DeleteValue(kg int, addr Address, name string) {
	DeleteValue(l.overlay, kg, addr, name)
}

// Touch refreshes the values of addr that expire after they are used.
func (l *Layers) Touch(kg int, addr Address, vals map[string]Value, now int64) {
	Touch(l.overlay, kg, addr, vals, now)
}

// SweepExpired deletes up to limit expired values of the key groups in r,
// resuming at from, and the index entries of the addresses left without
// state; see [SweepExpired].
func (l *Layers) SweepExpired(r keygroup.Range, from []byte, now int64, limit int) ([]byte, error) {
	next, emptied, err := sweepExpired(l.v, l.overlay, r, from, now, limit)
	l.unindexed += uint64(emptied)
	return next, err
}

// IndexAddress adds addr to the address index unless it is there: call it
// after writing a value of an address that may have had none.
func (l *Layers) IndexAddress(kg int, addr Address) error {
	_, err := PutIndex(l.v, l.overlay, kg, addr)
	return err
}

// IndexNewAddress adds addr to the address index without looking: call it
// after writing the first value of an address whose state was read (all
// the values its type declares) and found empty.
func (l *Layers) IndexNewAddress(kg int, addr Address) error {
	return AddIndex(l.v, l.overlay, kg, addr)
}

// UnindexIfEmpty removes addr from the address index when it has no state
// left: call it after deleting values of addr.
func (l *Layers) UnindexIfEmpty(kg int, addr Address) error {
	dropped, err := DropIndexIfEmpty(l.v, l.overlay, kg, addr)
	if dropped {
		l.unindexed++
	}
	return err
}

// Unindexed counts the addresses removed from the address index so far. An
// address that had state when this returned n is still indexed while it
// returns n.
func (l *Layers) Unindexed() uint64 { return l.unindexed }

// ListAddresses lists the ids of a function type that have state in the
// key groups of r; see [ListAddresses].
func (l *Layers) ListAddresses(r keygroup.Range, functionType, prefix, after string, limit int) ([]string, error) {
	return ListAddresses(l.v, r, functionType, prefix, after, limit)
}

// CountAddresses counts the addresses of a function type that have state
// in the key groups of r.
func (l *Layers) CountAddresses(r keygroup.Range, functionType string) (int64, error) {
	return CountAddresses(l.v, r, functionType)
}

// PutTimer stores a delayed message; see [PutTimer].
func (l *Layers) PutTimer(kg int, t *storagev1.Timer) error {
	_, err := PutTimer(l.v, l.overlay, kg, t)
	return err
}

// CancelTimer deletes the pending delayed message of owner with token, and
// reports whether there was one.
func (l *Layers) CancelTimer(kg int, owner Address, token string) (bool, error) {
	return CancelTimer(l.v, l.overlay, kg, owner, token)
}

// NextTimerDue returns when the earliest delayed message of the key groups
// in r is due; see [NextTimerDue].
func (l *Layers) NextTimerDue(r keygroup.Range) (int64, bool, error) {
	return NextTimerDue(l.v, r)
}

// TakeDueTimers deletes and returns up to limit delayed messages of the key
// groups in r that are due at now, in due order; see [DueTimers]. A timer
// that cannot be deleted is left out and its error returned with the
// others.
func (l *Layers) TakeDueTimers(r keygroup.Range, now int64, limit int) ([]*storagev1.Timer, error) {
	type due struct {
		key []byte
		t   *storagev1.Timer
	}
	var found []due
	err := DueTimers(l.v, r, now, limit, func(key []byte, t *storagev1.Timer) error {
		found = append(found, due{bytes.Clone(key), t})
		return nil
	})
	out := make([]*storagev1.Timer, 0, len(found))
	for _, d := range found {
		if derr := DeleteTimer(l.v, l.overlay, d.key, d.t); derr != nil {
			err = derr
			continue
		}
		out = append(out, d.t)
	}
	return out, err
}

// LoadMailbox returns the mailbox snapshot of key group kg.
func (l *Layers) LoadMailbox(kg int) (*storagev1.Mailbox, error) {
	return LoadMailbox(l.v, kg)
}
