package shard

// Live moves (cluster mode): the key groups a running shard processes
// change at a checkpoint's barrier, so that the others never stop.
//
// A key group that leaves stops at the shard's snapshot of checkpoint n:
// its mailboxes, as they are then (queued messages and the batches in
// calls), belong to checkpoint n, and so do its messages that arrive
// afterwards from sources whose barrier n has not come yet (recorded, as
// any channel's); nothing of it is processed here after the snapshot, and
// the outcome of a call still in flight for it is dropped. Its next owner
// restores checkpoint n and runs what the mailboxes hold. Messages the shard
// sends it after the snapshot go out with checkpoint n+1 like any message
// to a key group owned elsewhere.
//
// A key group that joins starts at the snapshot of the checkpoint that
// carries the move: the worker restored it into the store before, its
// stored mailboxes are queued, and the readers deliver its messages after
// their barrier of that checkpoint, so no message of it can come before.

// regroup applies a move at the snapshot of a checkpoint.
func (c *Core) regroup(leave, join []int) {
	if c.owned == nil {
		return
	}
	changed, left := false, false
	for _, kg := range leave {
		if kg >= c.cfg.KGLo && kg < c.cfg.KGHi && c.owned[kg] {
			c.owned[kg], changed, left = false, true, true
		}
	}
	if left {
		c.dropNotOwned()
	}
	for _, kg := range join {
		if kg < c.cfg.KGLo || kg >= c.cfg.KGHi || c.owned[kg] {
			continue
		}
		c.owned[kg], changed = true, true
		c.ckpt.joined = append(c.ckpt.joined, kg)
		c.store.KeyGroupRestored(kg)
		if err := c.restoreKeyGroup(kg); err != nil {
			// The store was written just before; a read that fails here
			// leaves the key group's stored mailbox to the next restore.
			c.log.Error("restoring the mailboxes of a key group that joined failed", "key_group", kg, "err", err)
		}
	}
	if !changed {
		return
	}
	for _, b := range c.boxes {
		c.markReady(b)
	}
	c.nextDue = dueUnknown
	c.idle = !c.ownsAny()
}

// dropNotOwned removes the mailboxes of key groups that left, after
// copying them into the checkpoint in progress.
func (c *Core) dropNotOwned() {
	for addr, b := range c.boxes {
		if c.owned[b.kg] {
			continue
		}
		c.preserve(b)
		delete(c.boxes, addr)
		for i := range b.queue {
			c.queued -= b.queue[i].size()
		}
		for i := range b.inflight {
			c.queued -= b.inflight[i].size()
		}
		c.nQueued -= len(b.queue) + len(b.inflight)
		c.spilled -= b.spillBytes
		c.nSpilled -= b.spilledCount()
		// Not reused: a call in flight may still refer to it.
		b.moved = true
	}
	for _, q := range c.queues {
		keep := q.boxes[:0]
		for _, b := range q.boxes {
			if b.moved {
				b.isReady = false
				c.nReady--
				continue
			}
			keep = append(keep, b)
		}
		clear(q.boxes[len(keep):])
		q.boxes = keep
	}
	keep := c.retrying[:0]
	for _, b := range c.retrying {
		if !b.moved {
			keep = append(keep, b)
		}
	}
	clear(c.retrying[len(keep):])
	c.retrying = keep
}

// notOwned takes a message for a key group this shard does not process.
// One that arrives before its source's barrier of the checkpoint in
// progress belongs to that checkpoint, the last of its key group here:
// it is recorded into it, not processed. Any other goes to the key
// group's owner with the next checkpoint.
func (c *Core) notOwned(it Item) {
	if p := c.ckpt; p != nil && !p.seen[it.Source] {
		c.record(it.Source, &it.Msg)
		return
	}
	c.route(it.Msg)
}
