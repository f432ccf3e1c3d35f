package state

import (
	"encoding/binary"
	"fmt"

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
func (l *Layers) Seen(kg int, addr Address, key string, now int64) (bool, error) {
	val, ok, err := l.v.Get(seenKey(kg, addr, key))
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
	PutSeen(l.overlay, kg, addr, key, expiresAt)
}

// PutSeen writes the mark of key seen by addr until expiresAt into o.
func PutSeen(o *Overlay, kg int, addr Address, key string, expiresAt int64) {
	o.Set(seenKey(kg, addr, key), binary.BigEndian.AppendUint64(nil, uint64(expiresAt)))
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
