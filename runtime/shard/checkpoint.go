package shard

import (
	"slices"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/state"
)

// Checkpoints: a shard's side of the barrier protocol.
//
// The inputs of a shard are channels from numbered sources: every peer
// shard (messages between addresses), every ingress reader, and the
// checkpoint coordinator. Messages between shards form cycles, which is why
// this is Chandy–Lamport rather than Flink's aligned barriers: a shard that
// waited for barrier n from a peer before snapshotting could wait forever on
// a peer that waits for it.
//
//  1. The coordinator starts checkpoint n by asking every reader to emit
//     barrier n (a reader records the stream sequence it has delivered up to
//     and sends the barrier to every shard, in line with its messages) and
//     by sending barrier n itself to every shard.
//  2. The first barrier n a shard receives, from whichever source, makes it
//     snapshot at once: its uncommitted writes (the overlay) are set aside as
//     checkpoint n's and a fresh overlay takes the writes that follow; the
//     messages in its mailboxes (queued, and in flight to functions: their
//     effects have not been applied) belong to the snapshot; the exactly-once
//     egress buffered so far is set aside. Then it sends barrier n to every
//     peer. The mailboxes are not copied then: a mailbox's messages are
//     copied into the snapshot just before they first change (a message
//     arrives, a batch is taken or done), and those of the mailboxes left
//     untouched when the last barrier comes. So the pause is constant,
//     whatever is queued; copying everything at once stopped the loop for
//     milliseconds per ten thousand queued messages.
//  3. Until barrier n arrives from a source, every message from that source
//     is processed as usual and also recorded: it was sent before the
//     sender's snapshot (or, from a reader, before the recorded sequence) and
//     arrived after ours, so neither side's snapshot holds its effect.
//  4. When barrier n has come from every source, the recorded messages are
//     appended to the copied mailboxes, the mailboxes are written per key
//     group into checkpoint n's overlay, and the part goes to the
//     coordinator. The coordinator commits all parts, the readers' sequences
//     and a manifest as one synced Pebble batch; only then does it publish
//     the egress the parts hold and tell the shards, which drop the overlay
//     from their read path.
//
// On restore, Pebble holds exactly the last complete checkpoint; the shard
// queues the stored mailboxes again and the readers resume after their
// recorded sequences.
//
// Tried and dropped: aligned barriers on the ingress inputs (holding back a
// reader's messages until the others' barriers come) add pause for nothing,
// since the reader's messages can be recorded like any channel's; pausing the
// readers during the snapshot made pause depend on the slowest shard.

// Part is a shard's share of a checkpoint.
type Part struct {
	ID      uint64
	Shard   int
	Overlay *state.Overlay            // state writes up to the snapshot and the mailbox snapshots
	Egress  []*storagev1.EgressRecord // exactly-once records buffered up to the snapshot
	// Remote are the messages sent up to the snapshot to key groups that
	// this worker does not own (cluster mode): they leave in the same
	// atomic write as the checkpoint.
	Remote   []Envelope
	Pause    time.Duration      // how long the shard stopped for the snapshot
	Pending  int                // messages in the mailbox snapshots
	queued   map[int][]Envelope // mailbox snapshot per key group
	spilled  map[Address]*storagev1.SpilledBacklog
	recorded map[int][]Envelope // recorded after the snapshot, per key group
}

// pendingCheckpoint is a checkpoint this shard has snapshotted for and
// whose barriers it is still collecting.
type pendingCheckpoint struct {
	part    *Part
	seen    []bool // by source: barrier delivered
	waiting int
	// joined are the key groups that joined at the snapshot (regroup):
	// the checkpoint holds nothing of them, not even their mailboxes.
	joined []int
}

func (c *Core) barrier(source int, id uint64) {
	if c.ckpt == nil {
		c.snapshot(id)
	}
	p := c.ckpt
	if p.part.ID != id {
		c.log.Error("barrier of another checkpoint ignored", "got", id, "in_progress", p.part.ID, "source", source)
		return
	}
	if p.seen[source] {
		return
	}
	p.seen[source] = true
	p.waiting--
	if p.waiting == 0 {
		c.finishPart()
	}
}

func (c *Core) snapshot(id uint64) {
	start := c.env.Wall()
	part := &Part{
		ID:       id,
		Shard:    c.cfg.Index,
		Overlay:  c.store.HandOff(),
		Egress:   c.egressBuf,
		Remote:   c.remoteBuf,
		queued:   make(map[int][]Envelope),
		spilled:  make(map[Address]*storagev1.SpilledBacklog),
		recorded: make(map[int][]Envelope),
	}
	c.epoch++
	c.egressBuf, c.remoteBuf = nil, nil
	for j := 0; j < c.cfg.Shards; j++ {
		if j != c.cfg.Index {
			c.env.Send(j, Item{Source: c.cfg.Index, Barrier: id})
		}
	}
	n := c.cfg.Shards + c.cfg.Sources
	c.ckpt = &pendingCheckpoint{part: part, seen: make([]bool, n), waiting: n - 1}
	c.ckpt.seen[c.cfg.Index] = true
	if c.cfg.Moves != nil {
		c.regroup(c.cfg.Moves(id))
	}
	part.Pause = c.env.Wall().Sub(start)
	c.m.pauseSeconds.Observe(part.Pause.Seconds())
}

// record keeps a message that arrived between this shard's snapshot and the
// barrier from its source.
func (c *Core) record(source int, msg *Envelope) {
	p := c.ckpt
	if p == nil || p.seen[source] {
		return
	}
	_, kg := c.cfg.Locate(msg.Target.ID)
	p.part.recorded[kg] = append(p.part.recorded[kg], *msg)
}

// preserve copies a mailbox's messages into the snapshot of the checkpoint
// in progress before they change, unless they are already there or the
// mailbox came after the snapshot. Envelopes are copied as they are: their
// strings and payloads are never modified. A spilled backlog is in the
// store already; its bounds are copied.
func (c *Core) preserve(b *mailbox) {
	if c.ckpt == nil || b.saved == c.epoch || b.born == c.epoch {
		return
	}
	b.saved = c.epoch
	q := append(c.ckpt.part.queued[b.kg], b.inflight...)
	c.ckpt.part.queued[b.kg] = append(q, b.queue...)
	if b.spilledCount() > 0 {
		c.ckpt.part.spilled[b.addr] = &storagev1.SpilledBacklog{
			Address: &twinflowv1.Address{Type: b.addr.Type, Id: b.addr.ID},
			Head:    b.spillHead, Tail: b.spillTail, Bytes: b.spillBytes,
		}
	}
}

func (c *Core) finishPart() {
	for _, b := range c.boxes {
		c.preserve(b)
	}
	part, joined := c.ckpt.part, c.ckpt.joined
	c.ckpt = nil
	// A recorded message for an address whose backlog had spilled at the
	// snapshot is newer than the spilled messages: on restore it goes after
	// them.
	spilledKG := make(map[int][]*storagev1.SpilledBacklog)
	for _, s := range part.spilled {
		_, kg := c.cfg.Locate(s.GetAddress().GetId())
		spilledKG[kg] = append(spilledKG[kg], s)
	}
	expires := c.env.Now().Add(c.cfg.DedupWindow).UnixMilli()
	for kg := c.cfg.KGLo; kg < c.cfg.KGHi; kg++ {
		// An address's messages of the snapshot come before those that
		// reached it later.
		q := part.queued[kg]
		for _, e := range part.recorded[kg] {
			// The checkpoint holds a recorded message, so it holds its mark
			// too: after a restore from it, a repeat is still dropped.
			if e.Key != "" {
				state.PutSeen(part.Overlay, kg, state.Address(e.Target), e.Key, expires)
			}
			if s := part.spilled[e.Target]; s != nil {
				s.After = append(s.After, pendingOf(&e))
				continue
			}
			q = append(q, e)
		}
		sp := spilledKG[kg]
		if len(q) == 0 && len(sp) == 0 && !c.mailboxKGs[kg] || slices.Contains(joined, kg) {
			continue
		}
		// An empty mailbox deletes the stored one.
		if err := state.PutMailbox(part.Overlay, kg, &storagev1.Mailbox{Pending: pendings(q), Spilled: sp}); err != nil {
			c.log.Error("recording mailbox failed", "key_group", kg, "err", err)
		}
		c.mailboxKGs[kg] = (len(q) > 0 || len(sp) > 0) && c.owns(kg)
		part.Pending += len(q)
		for _, s := range sp {
			part.Pending += int(s.GetTail()-s.GetHead()) + len(s.GetAfter())
		}
	}
	part.queued, part.recorded, part.spilled = nil, nil, nil
	// From here the coordinator reads the overlay while this shard still
	// reads through it; nothing may write to it.
	part.Overlay.Freeze()
	c.env.Part(part)
}

// Committed tells the shard that a checkpoint's parts are durable, so its
// overlay leaves the read path.
func (c *Core) Committed(p *Part) { c.store.Committed(p.Overlay) }

// Restore queues the inputs that the last checkpoint recorded in the
// mailboxes of this shard's key groups, so that they are processed again:
// for each address, its messages held in memory, then its spilled backlog,
// then the messages that reached it after the snapshot.
func (c *Core) Restore() error {
	for kg := c.cfg.KGLo; kg < c.cfg.KGHi; kg++ {
		if !c.owns(kg) {
			continue
		}
		if err := c.restoreKeyGroup(kg); err != nil {
			return err
		}
	}
	for _, b := range c.boxes {
		c.markReady(b)
	}
	return nil
}

// restoreKeyGroup queues the stored mailbox of key group kg.
func (c *Core) restoreKeyGroup(kg int) error {
	mb, err := c.store.LoadMailbox(kg)
	if err != nil {
		return err
	}
	if len(mb.GetPending()) == 0 && len(mb.GetSpilled()) == 0 {
		return nil
	}
	c.mailboxKGs[kg] = true
	for _, s := range mb.GetSpilled() {
		b := c.mailbox(Address{Type: s.GetAddress().GetType(), ID: s.GetAddress().GetId()})
		b.spillHead, b.spillTail, b.spillBytes = s.GetHead(), s.GetTail(), s.GetBytes()
		c.spilled += s.GetBytes()
		c.nSpilled += b.spilledCount()
	}
	for _, p := range mb.GetPending() {
		e := envelopeFromPending(p)
		c.push(c.mailbox(e.Target), e)
	}
	for _, s := range mb.GetSpilled() {
		b := c.mailbox(Address{Type: s.GetAddress().GetType(), ID: s.GetAddress().GetId()})
		for _, p := range s.GetAfter() {
			c.spillBack(b, envelopeFromPending(p))
		}
	}
	return nil
}

// pendings converts envelopes for a mailbox snapshot, in a few allocations.
func pendings(envs []Envelope) []*storagev1.Pending {
	if len(envs) == 0 {
		return nil
	}
	var (
		out     = make([]*storagev1.Pending, len(envs))
		ps      = make([]storagev1.Pending, len(envs))
		targets = make([]twinflowv1.Address, len(envs))
		args    = make([]twinflowv1.TypedValue, len(envs))
		callers []twinflowv1.Address
	)
	for i := range envs {
		e := &envs[i]
		p := &ps[i]
		targets[i] = twinflowv1.Address{Type: e.Target.Type, Id: e.Target.ID}
		args[i] = twinflowv1.TypedValue{Typename: e.Typename, Value: e.Payload}
		p.Target, p.Argument, p.ReplyTo = &targets[i], &args[i], e.ReplyTo
		if e.Caller.Type != "" {
			if callers == nil {
				callers = make([]twinflowv1.Address, 0, len(envs)-i)
			}
			callers = append(callers, twinflowv1.Address{Type: e.Caller.Type, Id: e.Caller.ID})
			p.Caller = &callers[len(callers)-1]
		}
		out[i] = p
	}
	return out
}

// Pendings converts envelopes to their stored form, as mailbox snapshots
// store them; cluster mode sends messages between workers in it.
func Pendings(envs []Envelope) []*storagev1.Pending { return pendings(envs) }

// EnvelopeOf converts a stored message back to an envelope.
func EnvelopeOf(p *storagev1.Pending) Envelope { return envelopeFromPending(p) }
