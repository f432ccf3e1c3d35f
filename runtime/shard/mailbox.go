package shard

import (
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/state"
)

// mailbox is the work of one address. It exists only while the address has
// messages queued, spilled or in a call.
//
// An address's backlog is, oldest first: inflight (the batch in the current
// call, or waiting to be retried), queue (in memory), then the spilled
// messages [spillHead, spillTail) in the store. A message joins the spilled
// part whenever that part is not empty, so the order holds; queue is
// refilled from the spilled part as batches go out.
type mailbox struct {
	addr     Address
	kg       int
	ep       *Endpoint               // nil when no endpoint serves the function type
	born     uint64                  // Core.epoch when the mailbox was made
	saved    uint64                  // the epoch whose snapshot holds its messages
	queue    []Envelope              // waiting, in arrival order
	inflight []Envelope              // in the current call, or waiting to be retried
	specs    []*twinflowv1.StateSpec // declared when the state was read
	values   map[string]state.Value
	readErr  error  // reading the state for the next call failed
	indexed  uint64 // Store.Unindexed when the state was read

	attempts     int       // failed attempts of the in-flight batch
	failingSince time.Time // when the in-flight batch first failed
	retryAt      time.Time // when a retryable function error may be retried

	spillHead, spillTail uint64 // the spilled messages' sequences
	spillBytes           int64  // their size as stored

	isReady bool
	inCall  bool
	moved   bool // its key group left this worker (regroup)
}

// spillBase is the sequence an empty spilled backlog starts at: halfway,
// so that messages can be put in front of the oldest spilled one (when a
// failing address's memory queue spills) as well as after the newest.
const spillBase = 1 << 62

func (b *mailbox) spilledCount() int { return int(b.spillTail - b.spillHead) }

// hasWork reports whether b has messages waiting, in memory or spilled.
func (b *mailbox) hasWork() bool { return len(b.queue) > 0 || b.spillTail > b.spillHead }

// failing reports whether b's batch failed and waits to be tried again.
func (b *mailbox) failing() bool { return b.attempts > 0 }

// readyQueue holds the mailboxes that have messages waiting and no call in
// flight, for one endpoint, in the order they became ready. Dispatch takes
// from the queues of endpoints below their in-flight limit only, so that a
// saturated or unreachable endpoint costs nothing per loop turn however
// many addresses wait for it.
type readyQueue struct {
	ep    *Endpoint
	boxes []*mailbox
}

// mailbox returns the mailbox of addr, creating it.
func (c *Core) mailbox(addr Address) *mailbox {
	b := c.boxes[addr]
	if b == nil {
		_, kg := c.cfg.Locate(addr.ID)
		b = c.newMailbox(addr, kg)
		c.boxes[addr] = b
	}
	return b
}

func (c *Core) enqueue(env Envelope) {
	b := c.mailbox(env.Target)
	c.preserve(b)
	if b.spilledCount() > 0 || c.mustSpill(b) {
		c.spillBack(b, env)
	} else {
		c.push(b, env)
	}
	c.markReady(b)
}

// push appends env to b's memory queue.
func (c *Core) push(b *mailbox, env Envelope) {
	b.queue = append(b.queue, env)
	c.queued += env.size()
	c.nQueued++
}

// mustSpill reports whether a new message for b goes to the store rather
// than memory: b holds its share of memory already, or b is failing and
// holds a batch's worth while the shard is short of memory.
func (c *Core) mustSpill(b *mailbox) bool {
	n := len(b.queue)
	if n >= c.cfg.MaxAddressQueue {
		return true
	}
	return b.failing() && b.ep != nil && (n >= b.ep.MaxBatchMessages || c.overMemory(0, 0))
}

// spillBack appends env to b's spilled backlog. The store refuses only a
// message it cannot encode; that one stays in memory.
func (c *Core) spillBack(b *mailbox, env Envelope) {
	if b.spilledCount() == 0 {
		b.spillHead, b.spillTail = spillBase, spillBase
	}
	if !c.putSpilled(b, b.spillTail, env) {
		c.push(b, env)
		return
	}
	b.spillTail++
}

// putSpilled stores env as message seq of b's spilled backlog.
func (c *Core) putSpilled(b *mailbox, seq uint64, env Envelope) bool {
	n, err := c.store.PutSpilled(b.kg, state.Address(b.addr), seq, pendingOf(&env))
	if err != nil {
		c.log.Error("spilling a message failed; keeping it in memory", "address", b.addr.String(), "err", err)
		return false
	}
	b.spillBytes += n
	c.spilled += n
	c.nSpilled++
	c.m.spilled.Inc()
	return true
}

// spillQueue moves b's memory queue in front of its spilled backlog.
func (c *Core) spillQueue(b *mailbox) {
	if len(b.queue) == 0 {
		return
	}
	c.preserve(b)
	if b.spilledCount() == 0 {
		b.spillHead, b.spillTail = spillBase, spillBase
	}
	i := len(b.queue)
	for ; i > 0; i-- {
		if !c.putSpilled(b, b.spillHead-1, b.queue[i-1]) {
			break
		}
		b.spillHead--
	}
	for j := i; j < len(b.queue); j++ {
		c.queued -= b.queue[j].size()
	}
	c.nQueued -= len(b.queue) - i
	clear(b.queue[i:])
	b.queue = b.queue[:i]
}

// spillFailing spills the memory queues of failing addresses until the
// shard is within its memory bounds, counting what waits in its inbox:
// first those waiting for a retry, then those of unreachable endpoints.
func (c *Core) spillFailing(inboxBytes, inboxMsgs int64) {
	for _, b := range c.retrying {
		if !c.overMemory(inboxBytes, inboxMsgs) {
			return
		}
		c.spillQueue(b)
	}
	for _, q := range c.queues {
		if es := c.endpoints[q.ep]; q.ep == nil || es == nil || !es.down {
			continue
		}
		for _, b := range q.boxes {
			if !c.overMemory(inboxBytes, inboxMsgs) {
				return
			}
			c.spillQueue(b)
		}
	}
}

// refill moves spilled messages of b into memory until its queue holds n.
func (c *Core) refill(b *mailbox, n int) {
	want := min(n-len(b.queue), b.spilledCount())
	if want <= 0 {
		return
	}
	ps, bytes, err := c.store.TakeSpilled(b.kg, state.Address(b.addr), b.spillHead, want)
	if err != nil {
		c.log.Error("reading a spilled backlog failed; retrying", "address", b.addr.String(), "err", err)
		return
	}
	if len(ps) == 0 {
		c.log.Error("spilled messages are missing from the store", "address", b.addr.String(),
			"head", b.spillHead, "tail", b.spillTail)
		c.spilled -= b.spillBytes
		c.nSpilled -= b.spilledCount()
		b.spillHead, b.spillTail, b.spillBytes = 0, 0, 0
		return
	}
	for _, p := range ps {
		c.push(b, envelopeFromPending(p))
	}
	b.spillHead += uint64(len(ps))
	b.spillBytes -= bytes
	c.spilled -= bytes
	c.nSpilled -= len(ps)
	if b.spilledCount() == 0 {
		b.spillHead, b.spillTail = 0, 0
	}
}

// newMailbox returns an empty mailbox, reusing a forgotten one.
func (c *Core) newMailbox(addr Address, kg int) *mailbox {
	ep, ok := c.cfg.EndpointFor(addr.Type)
	if !ok {
		ep = nil
	}
	n := len(c.free)
	if n == 0 {
		return &mailbox{addr: addr, kg: kg, ep: ep, born: c.epoch}
	}
	b := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	b.addr, b.kg, b.ep, b.born = addr, kg, ep, c.epoch
	return b
}

// maxFree bounds the mailboxes kept for reuse, and maxFreeQueue the queue
// capacity a kept mailbox may hold on to.
const (
	maxFree      = 4096
	maxFreeQueue = 256
)

// forget drops an idle mailbox, keeping it for reuse.
func (c *Core) forget(b *mailbox) {
	delete(c.boxes, b.addr)
	if len(c.free) >= maxFree || cap(b.queue) > maxFreeQueue || cap(b.inflight) > maxFreeQueue {
		return
	}
	*b = mailbox{queue: b.queue[:0], inflight: b.inflight[:0]}
	c.free = append(c.free, b)
}

// markReady makes b ready if it has work and waits for nothing: not for a
// call, nor for a retry (dueRetries makes it ready then).
func (c *Core) markReady(b *mailbox) {
	if b.isReady || b.inCall || len(b.inflight) > 0 || !b.retryAt.IsZero() || !b.hasWork() {
		return
	}
	c.pushReady(b)
}

// pushReady appends b to its endpoint's ready queue.
func (c *Core) pushReady(b *mailbox) {
	b.isReady = true
	q := c.ready[b.ep]
	if q == nil {
		q = &readyQueue{ep: b.ep}
		c.ready[b.ep] = q
		c.queues = append(c.queues, q)
	}
	q.boxes = append(q.boxes, b)
	c.nReady++
}

// takeBatch moves up to n waiting messages into the in-flight batch,
// refilling memory from the spilled backlog first.
func (c *Core) takeBatch(b *mailbox, n int) {
	c.preserve(b)
	if len(b.queue) < n {
		c.refill(b, n)
	}
	n = min(n, len(b.queue))
	if n == len(b.queue) {
		// All of them: swap the slices rather than copy.
		b.inflight, b.queue = b.queue, b.inflight[:0]
	} else {
		b.inflight = append(b.inflight[:0], b.queue[:n]...)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
	}
}

// finishBatch frees an address for its next batch, and forgets it when it
// has nothing left.
func (c *Core) finishBatch(b *mailbox) {
	c.preserve(b)
	for i := range b.inflight {
		c.queued -= b.inflight[i].size()
	}
	c.nQueued -= len(b.inflight)
	clear(b.inflight)
	b.inflight = b.inflight[:0]
	b.attempts, b.failingSince = 0, time.Time{}
	b.values, b.specs = nil, nil
	if !b.hasWork() {
		c.forget(b)
		return
	}
	c.markReady(b)
}

// pendingOf converts an envelope for storage.
func pendingOf(e *Envelope) *storagev1.Pending {
	p := &storagev1.Pending{
		Target:   &twinflowv1.Address{Type: e.Target.Type, Id: e.Target.ID},
		Argument: &twinflowv1.TypedValue{Typename: e.Typename, Value: e.Payload},
		ReplyTo:  e.ReplyTo,
	}
	if e.Caller.Type != "" {
		p.Caller = &twinflowv1.Address{Type: e.Caller.Type, Id: e.Caller.ID}
	}
	return p
}
