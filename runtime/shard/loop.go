package shard

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Loop drives a Core: it is the only goroutine that touches it.
type Loop struct {
	core      *Core
	inbox     *Inbox
	completed chan completion
	control   chan func(*Core)
	committed chan *Part
	tick      time.Duration
	saturated atomic.Bool
	sat       atomic.Pointer[saturation] // why and since when intake pauses, while it does
	status    atomic.Pointer[Status]
	stopped   chan struct{}
}

type completion struct {
	call *Call
	resp *twinflowv1.InvokeResponse
	err  error
}

// NewLoop returns a loop for core, reading inbox, that fires delayed
// messages and retries every tick.
func NewLoop(core *Core, inbox *Inbox, tick time.Duration) *Loop {
	return &Loop{
		core:      core,
		inbox:     inbox,
		completed: make(chan completion, 256),
		control:   make(chan func(*Core)),
		committed: make(chan *Part, 4),
		tick:      tick,
		stopped:   make(chan struct{}),
	}
}

// Inbox is the loop's input queue.
func (l *Loop) Inbox() *Inbox { return l.inbox }

// Completed hands the outcome of a call back to the loop. It may be called
// from any goroutine.
func (l *Loop) Completed(call *Call, resp *twinflowv1.InvokeResponse, err error) {
	select {
	case l.completed <- completion{call, resp, err}:
	case <-l.stopped:
	}
}

// Committed tells the loop that a part it handed off is durable.
func (l *Loop) Committed(p *Part) {
	select {
	case l.committed <- p:
	case <-l.stopped:
	}
}

// Saturated reports whether the shard is at a memory bound: ingress readers
// wait while it is.
func (l *Loop) Saturated() bool { return l.saturated.Load() }

type saturation struct {
	since  time.Time
	why    string
	logged bool // a pause this long was logged
}

// pauseLogAfter is how long intake pauses before it is logged: shorter
// pauses are the ordinary backpressure of a busy shard.
const pauseLogAfter = 5 * time.Second

// SaturatedSince says since when and why intake pauses for this shard; a
// zero time when it does not.
func (l *Loop) SaturatedSince() (time.Time, string) {
	if s := l.sat.Load(); s != nil {
		return s.since, s.why
	}
	return time.Time{}, ""
}

// Status returns the shard's health summary as of its last update, at most
// statusEvery ticks old.
func (l *Loop) Status() Status {
	if s := l.status.Load(); s != nil {
		return *s
	}
	return Status{}
}

// statusEvery is how many ticks pass between updates of Status.
const statusEvery = 50

// ErrStopped is returned by Do once the loop has ended.
var ErrStopped = errors.New("shard loop stopped")

// Do runs fn on the loop goroutine and waits for it: the way to read a
// shard's state consistently.
func (l *Loop) Do(ctx context.Context, fn func(*Core)) error {
	done := make(chan struct{})
	wrapped := func(c *Core) { fn(c); close(done) }
	select {
	case l.control <- wrapped:
	case <-l.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-l.stopped:
		return ErrStopped
	}
}

// Run processes until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	defer close(l.stopped)
	defer l.core.Close()
	t := time.NewTicker(l.tick)
	defer t.Stop()
	var buf []Item
	c := l.core
	label := c.shardL
	ticks := 0
	st := c.Status()
	l.status.Store(&st)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.inbox.Ready():
			items := l.inbox.Drain(buf)
			for i := range items {
				c.Deliver(items[i])
			}
			clear(items)
			buf = items[:0]
		case done := <-l.completed:
			c.Complete(done.call, done.resp, done.err)
		case p := <-l.committed:
			c.Committed(p)
		case fn := <-l.control:
			fn(c)
		case <-t.C:
			c.Tick()
			c.m.queuedBytes.WithLabelValues(label).Set(float64(c.queued + l.inbox.Bytes()))
			c.m.mailboxes.WithLabelValues(label).Set(float64(len(c.boxes)))
			if s := l.sat.Load(); s != nil && !s.logged && time.Since(s.since) >= pauseLogAfter {
				c.log.Warn("intake paused", "for", time.Since(s.since).Round(time.Millisecond), "reason", s.why)
				l.sat.Store(&saturation{since: s.since, why: s.why, logged: true})
			}
			if ticks++; ticks%statusEvery == 0 {
				st := c.Status()
				l.status.Store(&st)
				c.m.spilledBytes.WithLabelValues(label).Set(float64(st.SpilledBytes))
				c.m.spilledMessages.WithLabelValues(label).Set(float64(st.SpilledMessages))
				c.m.seenFilterBytes.WithLabelValues(label).Set(float64(c.store.SeenFilterBytes()))
			}
		}
		c.Dispatch()
		sat, why := c.Saturated(l.inbox.Bytes(), l.inbox.Len())
		if sat != l.saturated.Load() {
			if sat {
				l.sat.Store(&saturation{since: time.Now(), why: why})
			} else {
				if s := l.sat.Load(); s != nil && s.logged {
					c.log.Info("intake resumes", "paused_for", time.Since(s.since).Round(time.Millisecond))
				}
				l.sat.Store(nil)
			}
			l.saturated.Store(sat)
			v := 0.0
			if sat {
				v = 1
			}
			c.m.saturated.WithLabelValues(label).Set(v)
		}
	}
}
