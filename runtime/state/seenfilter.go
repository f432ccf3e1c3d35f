package state

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

var errLayersClosed = errors.New("state: layers closed")

// The seen filter lets the check of an idempotency key skip the store in
// the common case, a key never seen: before it, every message with a key
// cost a point read through the overlays and Pebble's memtables (about 10% of
// the runtime's CPU at 20k msgs/s), and almost every such read found
// nothing.
//
// It is a Bloom filter of the marks of the shard's layers, answering "no
// mark" or "maybe": maybe reads the store as before. It must never answer
// "no mark" for a mark the store or the overlays hold, so it covers, per
// key group, every mark written through the layers (MarkSeen) and every
// mark the store held before: a key group is trusted only once an iterator
// over its marks, opened after the layers existed, has been read into the
// filter (in the background; until then its checks read the store). A key
// group whose marks the store received from elsewhere (restored from a
// snapshot when it joins a worker) is read again (KeyGroupRestored).
//
// Marks expire, Bloom filters do not forget: marks are kept in generations
// by expiry time, each spanning half the dedup window, and a generation is
// dropped when every mark in it has expired. The filter therefore holds at
// most the marks of one and a half windows, at about 10 bits each.
type seenFilter struct {
	seed maphash.Seed
	span int64 // ms of expiry times per generation

	mu   sync.Mutex
	gens map[int64]*generation // by expiry time / span
	kgs  map[int]*kgFilter
	// last is the size of the newest generation that was dropped or, while
	// none was, 0: a new generation starts with room for as many marks.
	last  int
	bytes int64
	swept int64 // now/span at the last look for expired generations
}

type generation struct {
	filters []*markFilter // the last takes the new marks; a full one is followed by one twice its size
	marks   int
}

// kgFilter is whether the filter covers a key group's stored marks.
type kgFilter struct {
	ready    bool
	scanning bool
	epoch    uint64 // counts restores: a read started before one is void
	started  int64  // when the last read started (Unix ms)
}

// newSeenFilter returns a filter for marks that live window.
func newSeenFilter(window time.Duration) *seenFilter {
	if window <= 0 {
		panic("state: the dedup window must be positive")
	}
	return &seenFilter{seed: maphash.MakeSeed(), span: max(window.Milliseconds()/2, 1),
		gens: make(map[int64]*generation), kgs: make(map[int]*kgFilter)}
}

// absent reports whether the filter knows that no mark of key (a seen key,
// of key group kg) is stored or overlaid. When it does not cover kg yet,
// scan is true, and the caller starts reading kg's stored marks with the
// given epoch (see scanned).
func (f *seenFilter) absent(kg int, key []byte, now int64) (absent bool, scan bool, epoch uint64) {
	h := maphash.Bytes(f.seed, key)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire(now)
	s := f.kgs[kg]
	if s == nil {
		s = &kgFilter{}
		f.kgs[kg] = s
	}
	if !s.ready {
		if s.scanning || s.started > 0 && now < s.started+scanRetryMs {
			return false, false, 0
		}
		s.scanning, s.started = true, now
		return false, true, s.epoch
	}
	for _, g := range f.gens {
		for _, b := range g.filters {
			if b.mayHold(h) {
				return false, false, 0
			}
		}
	}
	return true, false, 0
}

// add records a mark of key expiring at expiresAt.
func (f *seenFilter) add(key []byte, expiresAt int64) {
	h := maphash.Bytes(f.seed, key)
	f.mu.Lock()
	f.addLocked(h, expiresAt)
	f.mu.Unlock()
}

func (f *seenFilter) addLocked(h uint64, expiresAt int64) {
	id := expiresAt / f.span
	g := f.gens[id]
	if g == nil {
		g = &generation{}
		f.gens[id] = g
	}
	var b *markFilter
	if n := len(g.filters); n > 0 && !g.filters[n-1].full() {
		b = g.filters[n-1]
	} else {
		size := max(f.last, minBloomMarks)
		if n > 0 {
			size = 2 * g.filters[n-1].capacity
		}
		b = newMarkFilter(size)
		g.filters = append(g.filters, b)
		f.bytes += b.bytes()
	}
	b.add(h)
	g.marks++
}

// expire drops the generations whose marks have all expired at now. A
// generation ends at a multiple of span, so the generations are looked at
// once per span, not at every check.
func (f *seenFilter) expire(now int64) {
	if now/f.span == f.swept {
		return
	}
	f.swept = now / f.span
	for id, g := range f.gens {
		if (id+1)*f.span <= now {
			for _, b := range g.filters {
				f.bytes -= b.bytes()
			}
			f.last = g.marks
			delete(f.gens, id)
		}
	}
}

// scanRetryMs is how long after a failed read of a key group's marks the
// next check starts another.
const scanRetryMs = 1000

// load adds the marks of an iterator over stored marks, a batch at a time
// so that checks are not held up, until it ends or stop returns true.
func (f *seenFilter) load(it *pebble.Iterator, stop func() bool) error {
	type mark struct {
		h         uint64
		expiresAt int64
	}
	batch := make([]mark, 0, 256)
	flush := func() {
		f.mu.Lock()
		for _, m := range batch {
			f.addLocked(m.h, m.expiresAt)
		}
		f.mu.Unlock()
		batch = batch[:0]
	}
	for valid := it.First(); valid; valid = it.Next() {
		at, err := seenExpiresAt(it.Value())
		if err != nil {
			return fmt.Errorf("state: seen mark %q: %w", it.Key(), err)
		}
		batch = append(batch, mark{maphash.Bytes(f.seed, it.Key()), at})
		if len(batch) == cap(batch) {
			if stop() {
				return errLayersClosed
			}
			flush()
		}
	}
	flush()
	return it.Error()
}

// scanned ends a read of kg's stored marks started with epoch: the filter
// covers kg from now on, unless the read failed (the next check a second
// later starts another) or kg was restored meanwhile.
func (f *seenFilter) scanned(kg int, epoch uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.kgs[kg]
	if s.epoch != epoch {
		return
	}
	s.scanning = false
	s.ready = err == nil
}

// restored makes the filter stop trusting itself for kg, whose stored
// marks were replaced, until they are read again.
func (f *seenFilter) restored(kg int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.kgs[kg]
	if s == nil {
		return
	}
	s.epoch++
	s.ready, s.scanning, s.started = false, false, 0
}

// size returns the filter's memory in bytes.
func (f *seenFilter) size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bytes
}

// A markFilter is a blocked Bloom filter: each mark sets bloomProbes bits in one
// 512-bit block (a cache line), so a check costs one cache miss. At
// bloomBitsPerMark bits per mark its false positive rate is about 1%.
type markFilter struct {
	blocks          [][8]uint64
	marks, capacity int
}

const (
	bloomBitsPerMark = 10
	bloomProbes      = 7
	minBloomMarks    = 4096
)

func newMarkFilter(capacity int) *markFilter {
	n := (capacity*bloomBitsPerMark + 511) / 512
	return &markFilter{blocks: make([][8]uint64, n), capacity: capacity}
}

func (b *markFilter) full() bool   { return b.marks >= b.capacity }
func (b *markFilter) bytes() int64 { return int64(len(b.blocks)) * 64 }

func (b *markFilter) add(h uint64) {
	blk, x := b.block(h)
	for range bloomProbes {
		p := x >> 55
		blk[p>>6] |= 1 << (p & 63)
		x <<= 9
	}
	b.marks++
}

func (b *markFilter) mayHold(h uint64) bool {
	blk, x := b.block(h)
	for range bloomProbes {
		p := x >> 55
		if blk[p>>6]&(1<<(p&63)) == 0 {
			return false
		}
		x <<= 9
	}
	return true
}

// block picks the block of h from its high 32 bits, and returns with it
// the bits that choose the probes in it: 9 bits per probe from h mixed
// again, so that they do not repeat the bits that chose the block.
func (b *markFilter) block(h uint64) (*[8]uint64, uint64) {
	i := (h >> 32) * uint64(len(b.blocks)) >> 32
	return &b.blocks[i], h * 0x9e3779b97f4a7c15
}
