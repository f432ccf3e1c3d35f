package frontdoor

import (
	"errors"
	"time"
)

// Limits bound the front door's durable writes and the messages waiting
// for one. Zero values take the defaults.
type Limits struct {
	// MaxItems is the most messages one write holds. Default 1024.
	MaxItems int
	// MaxBytes is about the largest write, in bytes of encoded messages: a
	// write takes messages while they fit, and a message larger than
	// MaxBytes goes alone. Default 512 KiB.
	MaxBytes int
	// MaxWrites is how many writes may be in flight at once. Default 1:
	// JetStream syncs one write after the other anyway, and messages that
	// arrive meanwhile make the next write larger.
	MaxWrites int
	// MaxQueued and MaxQueuedBytes bound the messages waiting for a write;
	// a message beyond them is refused as unavailable. Defaults 16,384 and
	// 64 MiB.
	MaxQueued      int
	MaxQueuedBytes int
	// MaxUnread is how many of the messages the door wrote may wait to be
	// read from the stream: beyond it the door holds its writes, so that a
	// runtime whose intake is paused (its shards at a memory bound, or
	// stopping) pushes back on clients instead of piling messages up.
	// Default 32,768.
	MaxUnread int
	// MaxWait is how long a message may wait for its write; then it is
	// refused as unavailable, to be sent again. Default 2s.
	MaxWait time.Duration
	// Linger is the longest a write waits, after the one before it ended,
	// for the senders that write acknowledged to send again (see
	// batcher.written). Default 2ms; negative: writes never wait.
	Linger time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxItems <= 0 {
		l.MaxItems = 1024
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 512 << 10
	}
	if l.MaxWrites <= 0 {
		l.MaxWrites = 1
	}
	if l.MaxQueued <= 0 {
		l.MaxQueued = 16384
	}
	if l.MaxQueuedBytes <= 0 {
		l.MaxQueuedBytes = 64 << 20
	}
	if l.MaxUnread <= 0 {
		l.MaxUnread = 32768
	}
	if l.MaxWait <= 0 {
		l.MaxWait = 2 * time.Second
	}
	if l.Linger == 0 {
		l.Linger = 2 * time.Millisecond
	}
	return l
}

// errQueueFull is what Add returns when a message does not fit the queue.
var errQueueFull = errors.New("queue full")

// batcher decides what goes into each durable write: the messages that
// arrived while the previous writes were in flight, in arrival order, up to
// the limits of one write. It does no I/O, starts no goroutine and reads no
// clock: the Door drives it under its lock, and tests step it.
type batcher[T any] struct {
	lim     Limits
	queue   []entry[T] // waiting, oldest first, from head
	head    int
	bytes   int // of the waiting messages
	writing int // writes in flight

	// The next write waits for want messages until until (see written).
	want  int
	until time.Time
}

type entry[T any] struct {
	v    T
	size int
	at   time.Time // when it was added
}

func newBatcher[T any](lim Limits) *batcher[T] {
	return &batcher[T]{lim: lim.withDefaults()}
}

// add queues v, of size bytes, at now. It refuses it with errQueueFull when
// the queue is at one of its bounds.
func (b *batcher[T]) add(v T, size int, now time.Time) error {
	if b.len() >= b.lim.MaxQueued || b.bytes+size > b.lim.MaxQueuedBytes {
		return errQueueFull
	}
	b.queue = append(b.queue, entry[T]{v: v, size: size, at: now})
	b.bytes += size
	return nil
}

// take starts a write at now, unless every write slot is in use, nothing
// waits, writes are held or the write lingers, and returns its messages:
// the oldest waiting ones, as many as fit one write, and at least one. It
// returns nil when no write starts, and then, if the write lingers, when
// to take again. The caller calls written when the write is over.
func (b *batcher[T]) take(held bool, now time.Time) (batch []T, retry time.Time) {
	if held || b.writing >= b.lim.MaxWrites || b.len() == 0 {
		return nil, time.Time{}
	}
	if b.len() < b.want && now.Before(b.until) {
		return nil, b.until
	}
	n, size := 0, 0
	for _, e := range b.queue[b.head:] {
		if n == b.lim.MaxItems || n > 0 && size+e.size > b.lim.MaxBytes {
			break
		}
		n++
		size += e.size
	}
	out := make([]T, n)
	for i := range n {
		out[i] = b.queue[b.head+i].v
	}
	b.drop(n, size)
	b.writing++
	b.want = 0
	return out, time.Time{}
}

// written ends a write that take started, at now; acked is how many of its
// messages were one-way sends, whose senders were just acknowledged.
//
// Why the next write lingers. Senders that wait for each acknowledgement
// before their next message (most clients) send again right after a write
// acknowledges them; without a wait those messages miss the write that
// starts at once with what arrived meanwhile, and each sender gets one
// message into every second write: half the messages a write could carry,
// for the same fsync. So the next write waits until as many messages wait
// as the acknowledged senders and the ones already waiting, but no longer
// than Linger: a sender that does not come back costs the others at most
// that. The wait is not bounded by how long the write took: the senders'
// way back (the acknowledgement, their next message, through the NATS
// server or HTTP) takes longer than a fast synced write, and a wait cut at
// the write's time let half of them miss every write. Calls count for
// nothing: their senders wait for the function's reply, not for the write.
// A lone sender's next message goes out as soon as it arrives.
func (b *batcher[T]) written(acked int, now time.Time) {
	b.writing--
	b.want = 0
	if acked == 0 || b.lim.Linger < 0 {
		return
	}
	b.want = min(acked+b.len(), b.lim.MaxItems)
	b.until = now.Add(b.lim.Linger)
}

// expire removes and returns the messages added before t.
func (b *batcher[T]) expire(t time.Time) []T {
	n, size := 0, 0
	for _, e := range b.queue[b.head:] {
		if !e.at.Before(t) {
			break
		}
		n++
		size += e.size
	}
	if n == 0 {
		return nil
	}
	out := make([]T, n)
	for i := range n {
		out[i] = b.queue[b.head+i].v
	}
	b.drop(n, size)
	return out
}

// flush removes and returns every waiting message.
func (b *batcher[T]) flush() []T {
	return b.expire(time.Unix(1<<62, 0))
}

// drop removes the n oldest messages, of size bytes in all.
func (b *batcher[T]) drop(n, size int) {
	clear(b.queue[b.head : b.head+n])
	b.head += n
	b.bytes -= size
	if b.head == len(b.queue) {
		b.queue, b.head = b.queue[:0], 0
	} else if b.head > 1024 && b.head > len(b.queue)/2 {
		// Reclaim the space in front, so the slice does not grow forever
		// under a queue that never empties.
		k := copy(b.queue, b.queue[b.head:])
		clear(b.queue[k:])
		b.queue, b.head = b.queue[:k], 0
	}
}

// len is the number of waiting messages.
func (b *batcher[T]) len() int { return len(b.queue) - b.head }

// oldest returns when the oldest waiting message was added.
func (b *batcher[T]) oldest() (time.Time, bool) {
	if b.len() == 0 {
		return time.Time{}, false
	}
	return b.queue[b.head].at, true
}
