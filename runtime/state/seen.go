package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/twinflow/twinflow/runtime/keygroup"
)

// Seen keys: an address remembers the idempotency keys of the messages
// that reached it, each until it expires, so that a repeat of a message (a
// publisher retrying after its acknowledgement was lost) is dropped. The
// marks are state like any other: written in the shard's overlay with the
// message's arrival, they are in exactly the checkpoints that hold the
// message's effects.

func seenKey(kg int, addr Address, key string) []byte {
	b := make([]byte, 0, 3+addressLen(addr)+len(key))
	return append(appendAddress(appendKG(b, kg, kindSeen), addr), key...)
}

// Seen reports whether addr has a mark for key that has not expired at now.
// A key the seen filter knows to be new is answered without reading the
// store (see seenFilter).
func (l *Layers) Seen(kg int, addr Address, key string, now int64) (bool, error) {
	k := seenKey(kg, addr, key)
	absent, scan, epoch := l.seen.absent(kg, k, now)
	if scan {
		l.scanSeen(kg, epoch)
	}
	if absent {
		return false, nil
	}
	l.seenReads++
	val, ok, err := l.v.Get(k)
	if err != nil || !ok {
		return false, err
	}
	at, err := seenExpiresAt(val)
	if err != nil {
		return false, fmt.Errorf("state: seen key %q of %s: %w", key, addr, err)
	}
	return at > now, nil
}

// MarkSeen marks key as seen by addr until expiresAt (Unix ms).
func (l *Layers) MarkSeen(kg int, addr Address, key string, expiresAt int64) {
	k := seenKey(kg, addr, key)
	putSeen(l.overlay, k, expiresAt)
	l.seen.add(k, expiresAt)
}

// KeyGroupRestored tells the layers that the store's state of key group kg
// was replaced from elsewhere (restored when it joined this worker): its
// marks are read into the seen filter again before it trusts itself.
func (l *Layers) KeyGroupRestored(kg int) { l.seen.restored(kg) }

// SeenFilterBytes is the memory of the seen filter.
func (l *Layers) SeenFilterBytes() int64 { return l.seen.size() }

// scanSeen reads key group kg's stored marks into the seen filter, in the
// background. The iterator is opened here, so that it sees every mark
// stored before now; the marks written after go through MarkSeen.
func (l *Layers) scanSeen(kg int, epoch uint64) {
	lo, hi := kindBounds(kg, kindSeen)
	it, err := l.store.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		l.scannedSeen(kg, epoch, err)
		return
	}
	l.closing.Go(func() {
		l.scannedSeen(kg, epoch, errors.Join(l.seen.load(it, l.closed.Load), it.Close()))
	})
}

func (l *Layers) scannedSeen(kg int, epoch uint64, err error) {
	if err != nil && !errors.Is(err, errLayersClosed) {
		l.log.Error("reading the seen keys of a key group failed; its checks read the store", "key_group", kg, "err", err)
	}
	l.seen.scanned(kg, epoch, err)
}

// PutSeen writes the mark of key seen by addr until expiresAt into o.
func PutSeen(o *Overlay, kg int, addr Address, key string, expiresAt int64) {
	putSeen(o, seenKey(kg, addr, key), expiresAt)
}

func putSeen(o *Overlay, k []byte, expiresAt int64) {
	o.Set(k, binary.BigEndian.AppendUint64(nil, uint64(expiresAt)))
}

// SweepSeen deletes expired marks, as SweepExpired does values.
func (l *Layers) SweepSeen(r keygroup.Range, from []byte, now int64, limit int) ([]byte, error) {
	next, _, err := sweep(l.v, l.overlay, r, kindSeen, seenExpiresAt, from, now, limit)
	return next, err
}

func seenExpiresAt(val []byte) (int64, error) {
	if len(val) != 8 {
		return 0, fmt.Errorf("%d bytes, want 8", len(val))
	}
	return int64(binary.BigEndian.Uint64(val)), nil
}
