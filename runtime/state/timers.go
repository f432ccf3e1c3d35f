package state

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

// PutTimer stores the delayed message t in key group kg, the key group of
// its owner, and returns its key. When t has a cancellation token and its
// owner already has a pending timer with that token, the pending one is
// replaced. o must be the newest layer of v: the key group's timer sequence
// and token index are read through v and written to o.
func PutTimer(v View, o *Overlay, kg int, t *storagev1.Timer) (key []byte, err error) {
	if len(v.layers) == 0 || v.layers[0] != o {
		return nil, errors.New("state: PutTimer: the overlay must be the view's newest layer")
	}
	if t.GetToken() != "" && t.GetOwner() == nil {
		return nil, errors.New("state: PutTimer: a timer with a cancellation token needs an owner")
	}
	var tk []byte
	if t.GetToken() != "" {
		tk = tokenKey(kg, addressOf(t.GetOwner()), t.GetToken())
		old, ok, err := v.Get(tk)
		if err != nil {
			return nil, err
		}
		if ok {
			o.Delete(old)
		}
	}
	sk := timerSeqKey(kg)
	var seq uint64
	if b, ok, err := v.Get(sk); err != nil {
		return nil, err
	} else if ok {
		if len(b) != 8 {
			return nil, fmt.Errorf("state: timer sequence of key group %d is corrupt", kg)
		}
		seq = binary.BigEndian.Uint64(b)
	}
	o.Set(sk, binary.BigEndian.AppendUint64(nil, seq+1))
	val, err := proto.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("state: PutTimer: %w", err)
	}
	key = TimerKey(kg, t.GetDueUnixMillis(), seq)
	o.Set(key, val)
	if tk != nil {
		o.Set(tk, key)
	}
	return key, nil
}

// TimerByToken returns the pending timer that owner, in key group kg, set
// with the cancellation token.
func TimerByToken(v View, kg int, owner Address, token string) (key []byte, t *storagev1.Timer, ok bool, err error) {
	key, ok, err = v.Get(tokenKey(kg, owner, token))
	if err != nil || !ok {
		return nil, nil, false, err
	}
	val, ok, err := v.Get(key)
	if err != nil {
		return nil, nil, false, err
	}
	if !ok {
		return nil, nil, false, fmt.Errorf("state: token %q of %s points to a missing timer %q", token, owner, key)
	}
	t, err = decodeTimer(key, val)
	if err != nil {
		return nil, nil, false, err
	}
	return key, t, true, nil
}

// CancelTimer deletes the pending timer that owner, in key group kg, set
// with the cancellation token, and reports whether there was one. o should
// be the newest layer of v.
func CancelTimer(v View, o *Overlay, kg int, owner Address, token string) (ok bool, err error) {
	tk := tokenKey(kg, owner, token)
	key, ok, err := v.Get(tk)
	if err != nil || !ok {
		return false, err
	}
	o.Delete(key)
	o.Delete(tk)
	return true, nil
}

// DeleteTimer deletes the timer t stored under key, typically after it
// fired, with its token index entry if that still points to it. o should
// be the newest layer of v.
func DeleteTimer(v View, o *Overlay, key []byte, t *storagev1.Timer) error {
	o.Delete(key)
	if t.GetToken() == "" {
		return nil
	}
	kg, ok := KeyGroupOf(key)
	if !ok {
		return fmt.Errorf("state: DeleteTimer: %q is not a timer key", key)
	}
	tk := tokenKey(kg, addressOf(t.GetOwner()), t.GetToken())
	cur, ok, err := v.Get(tk)
	if err != nil {
		return err
	}
	if ok && bytes.Equal(cur, key) {
		o.Delete(tk)
	}
	return nil
}

// DueTimers calls fn with up to limit timers of the key groups in r that
// are due at the Unix millisecond now, in due order; timers due in the same
// millisecond in key group order, and within one key group in creation
// order. limit <= 0 means no limit. The timers are read before fn is first
// called, so fn may write to v's layers, for example to delete the timer
// with [DeleteTimer]. fn owns t; key stays valid.
func DueTimers(v View, r keygroup.Range, now int64, limit int, fn func(key []byte, t *storagev1.Timer) error) error {
	if r.Len() <= 0 {
		return nil
	}
	// Visit the key groups one after the other with one iterator, keeping
	// the limit earliest timers seen in a max-heap. Once it is full, a key
	// group is read only up to the latest timer kept.
	var best dueHeap
	bound := now
	lo, hi := timerBounds(r.Lo, bound)
	it, err := v.newIter(lo, hi)
	if err != nil {
		return err
	}
	for kg := r.Lo; kg < r.Hi; kg++ {
		if kg > r.Lo {
			it.reset(timerBounds(kg, bound))
		}
		for ; it.valid(); it.next() {
			if limit > 0 && len(best) == limit {
				if !timerBefore(it.key, best[0].key) {
					break
				}
				heap.Pop(&best)
			}
			kv := make([]byte, len(it.key)+len(it.val))
			copy(kv, it.key)
			copy(kv[len(it.key):], it.val)
			heap.Push(&best, dueTimer{kv[:len(it.key)], kv[len(it.key):]})
		}
		if limit > 0 && len(best) == limit {
			_, bound, _, _ = DecodeTimerKey(best[0].key)
		}
	}
	if err := it.close(); err != nil {
		return err
	}
	out := make([]dueTimer, len(best))
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(&best).(dueTimer)
	}
	timers := make([]*storagev1.Timer, len(out))
	for i, d := range out {
		t, err := decodeTimer(d.key, d.val)
		if err != nil {
			return err
		}
		timers[i] = t
	}
	for i, d := range out {
		if err := fn(d.key, timers[i]); err != nil {
			return err
		}
	}
	return nil
}

// NextTimerDue returns the due time of the earliest timer of the key groups
// in r, and false when there is none.
func NextTimerDue(v View, r keygroup.Range) (due int64, ok bool, err error) {
	if r.Len() <= 0 {
		return 0, false, nil
	}
	var it *mergeIter
	for kg := r.Lo; kg < r.Hi; kg++ {
		lo, hi := kindBounds(kg, kindTimer)
		if it == nil {
			if it, err = v.newIter(lo, hi); err != nil {
				return 0, false, err
			}
		} else {
			it.reset(lo, hi)
		}
		if it.valid() {
			_, d, _, err := DecodeTimerKey(it.key)
			if err != nil {
				return 0, false, errors.Join(err, it.close())
			}
			if !ok || d < due {
				due, ok = d, true
			}
		}
	}
	if err := it.close(); err != nil {
		return 0, false, err
	}
	return due, ok, nil
}

// timerBefore orders timer keys by due time, then key group, then unique
// (creation order).
func timerBefore(a, b []byte) bool {
	if c := bytes.Compare(a[3:11], b[3:11]); c != 0 {
		return c < 0
	}
	if c := bytes.Compare(a[:2], b[:2]); c != 0 {
		return c < 0
	}
	return bytes.Compare(a[11:], b[11:]) < 0
}

type dueTimer struct {
	key, val []byte
}

// dueHeap is a max-heap of timers: the latest is at the top.
type dueHeap []dueTimer

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return timerBefore(h[j].key, h[i].key) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueTimer)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func decodeTimer(key, val []byte) (*storagev1.Timer, error) {
	if len(key) != 19 {
		return nil, fmt.Errorf("state: %w: %q is not a timer key", errMalformedKey, key)
	}
	t := new(storagev1.Timer)
	if err := proto.Unmarshal(val, t); err != nil {
		return nil, fmt.Errorf("state: timer %q: %w", key, err)
	}
	return t, nil
}

func addressOf(a *twinflowv1.Address) Address {
	return Address{Type: a.GetType(), ID: a.GetId()}
}
