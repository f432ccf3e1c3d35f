package shard

import (
	"sync"
	"sync/atomic"
)

// Address names a function instance.
type Address struct {
	Type string
	ID   string
}

// String returns "type/id".
func (a Address) String() string { return a.Type + "/" + a.ID }

// Envelope is one message on its way to an address.
type Envelope struct {
	Target    Address
	Caller    Address // zero when the message came from an ingress
	Typename  string
	Payload   []byte
	ReplyTo   string
	Published int64 // unix nanos when it entered the platform, for latency metrics; 0 if unknown
	// Key is the message's idempotency key, "" for none: a message with
	// the key of one its target has seen within the dedup window is a
	// repeat, and is dropped.
	Key string
}

// size is the memory an envelope is charged for in queue budgets.
func (e *Envelope) size() int64 {
	return int64(len(e.Payload)+len(e.Typename)+len(e.Target.Type)+len(e.Target.ID)+
		len(e.Caller.Type)+len(e.Caller.ID)+len(e.ReplyTo)+len(e.Key)) + envelopeOverhead
}

// envelopeOverhead approximates the fixed cost of an envelope in a queue:
// the struct, slice headers and the mailbox bookkeeping around it.
const envelopeOverhead = 160

// Item is what travels through an Inbox: a message or a barrier, from a
// numbered source (a peer shard, an ingress reader, or the coordinator).
type Item struct {
	Source  int
	Barrier uint64 // non-zero: barrier of that checkpoint, and no message
	Msg     Envelope
}

// Inbox is a shard's input queue: many producers, one consumer. Pushing
// never blocks, so shards sending to each other cannot deadlock in a cycle;
// memory is bounded instead by the ingress readers, which wait while a
// shard reports pressure (see Pressure).
type Inbox struct {
	mu struct {
		sync.Mutex
		items []Item // guarded by mu
	}
	notify chan struct{} // one pending wake-up at most
	bytes  atomic.Int64  // size of the queued messages
	msgs   atomic.Int64  // number of the queued messages
}

// NewInbox returns an empty inbox.
func NewInbox() *Inbox {
	return &Inbox{notify: make(chan struct{}, 1)}
}

// Push appends items, in order, and wakes the consumer.
func (in *Inbox) Push(items ...Item) {
	var n, m int64
	for i := range items {
		if items[i].Barrier == 0 {
			n += items[i].Msg.size()
			m++
		}
	}
	in.bytes.Add(n)
	in.msgs.Add(m)
	in.mu.Lock()
	in.mu.items = append(in.mu.items, items...)
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// Ready is signalled when items may be waiting.
func (in *Inbox) Ready() <-chan struct{} { return in.notify }

// Drain takes every queued item. The caller owns the returned slice; buf is
// reused for the next drain to avoid an allocation per wake-up.
func (in *Inbox) Drain(buf []Item) []Item {
	in.mu.Lock()
	items := in.mu.items
	in.mu.items = buf[:0]
	in.mu.Unlock()
	var n, m int64
	for i := range items {
		if items[i].Barrier == 0 {
			n += items[i].Msg.size()
			m++
		}
	}
	in.bytes.Add(-n)
	in.msgs.Add(-m)
	return items
}

// Bytes is the size of the messages queued.
func (in *Inbox) Bytes() int64 { return in.bytes.Load() }

// Len is the number of messages queued.
func (in *Inbox) Len() int64 { return in.msgs.Load() }
