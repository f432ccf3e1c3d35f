package shard

import (
	"math"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/state"
)

// sweepEvery and sweepLimit pace the deletion of expired values that no
// read has come across: a bounded slice of the state every few ticks, so
// the sweep never stalls the loop.
const (
	sweepEvery = 50
	sweepLimit = 512
)

// Tick fires due delayed messages, and now and then deletes some expired
// values and seen keys and logs the failures counted since the last log.
func (c *Core) Tick() {
	if c.idle {
		return
	}
	now := c.env.Now()
	nowMs := now.UnixMilli()
	c.ticks++
	if c.ticks%sweepEvery == 0 {
		next, err := c.store.SweepExpired(c.keyGroups(), c.sweepCursor, nowMs, sweepLimit)
		if err != nil {
			c.log.Error("sweeping expired state failed", "err", err)
		}
		c.sweepCursor = next
		if next, err = c.store.SweepSeen(c.keyGroups(), c.seenCursor, nowMs, sweepLimit); err != nil {
			c.log.Error("sweeping expired seen keys failed", "err", err)
		}
		c.seenCursor = next
	}
	if c.ticks%logEvery == 0 {
		c.logFailures()
	}
	if c.nextDue == dueUnknown {
		c.nextDue = math.MaxInt64
		for _, r := range c.ownedRanges() {
			due, ok, err := c.store.NextTimerDue(r)
			if err != nil {
				c.log.Error("scanning delayed messages failed", "err", err)
				c.nextDue = dueUnknown
				break
			}
			if ok && due < c.nextDue {
				c.nextDue = due
			}
		}
	}
	if nowMs < c.nextDue {
		return
	}
	var fired []*storagev1.Timer
	var err error
	for _, r := range c.ownedRanges() {
		limit := c.cfg.TimerScanLimit
		if limit > 0 {
			if limit -= len(fired); limit <= 0 {
				break
			}
		}
		var some []*storagev1.Timer
		some, err = c.store.TakeDueTimers(r, nowMs, limit)
		fired = append(fired, some...)
		if err != nil {
			c.log.Error("firing delayed messages failed", "err", err)
			break
		}
	}
	// Unless the limit left due timers behind, the next due time is read
	// again now that the fired ones are deleted.
	if err != nil || c.cfg.TimerScanLimit <= 0 || len(fired) < c.cfg.TimerScanLimit {
		c.nextDue = dueUnknown
	}
	wall := c.env.Wall().UnixNano()
	for _, t := range fired {
		c.m.timersFired.Inc()
		c.route(Envelope{
			Target:    Address{Type: t.GetTarget().GetType(), ID: t.GetTarget().GetId()},
			Caller:    Address{Type: t.GetOwner().GetType(), ID: t.GetOwner().GetId()},
			Typename:  t.GetArgument().GetTypename(),
			Payload:   t.GetArgument().GetValue(),
			ReplyTo:   t.GetReplyTo(),
			Published: wall,
		})
	}
}

// addTimer stores a delayed message that checkEffects found valid.
func (c *Core) addTimer(b *mailbox, d *twinflowv1.DelayedMessage, nowMs int64) {
	t := &storagev1.Timer{
		Owner:         &twinflowv1.Address{Type: b.addr.Type, Id: b.addr.ID},
		Token:         d.GetCancellationToken(),
		Target:        d.GetTarget(),
		Argument:      d.GetArgument(),
		DueUnixMillis: nowMs + d.GetDelayMillis(),
	}
	// A new message with the token of a pending one replaces it.
	if err := c.store.PutTimer(b.kg, t); err != nil {
		c.log.Error("storing delayed message failed", "address", b.addr.String(), "err", err)
		return
	}
	if c.nextDue != dueUnknown {
		c.nextDue = min(c.nextDue, t.GetDueUnixMillis())
	}
	c.m.timersSet.Inc()
}

func (c *Core) cancelTimer(b *mailbox, token string) {
	ok, err := c.store.CancelTimer(b.kg, state.Address(b.addr), token)
	if err != nil {
		c.log.Error("cancelling delayed message failed", "address", b.addr.String(), "token", token, "err", err)
		return
	}
	if ok { // cancelling a token that is not pending does nothing
		c.m.timersCancelled.Inc()
	}
}
