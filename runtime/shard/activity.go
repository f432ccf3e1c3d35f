package shard

import (
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Recent activity: what an address received and sent lately, for
// operators looking at one twin. It lives in the shard's memory only, for
// the addresses active last (least recently used first out), each with its
// last few messages each way and the first bytes of their payloads, so it
// is bounded (DefaultRecentAddresses × 2 × recentPerWay entries of at most
// recentPreview bytes of payload) and is lost on restart. Keeping it costs
// the shard one map lookup per batch and a copy of at most recentPreview
// bytes per message; entries and their buffers are reused.

// DefaultRecentAddresses is the default Config.RecentAddresses.
const DefaultRecentAddresses = 1024

const (
	recentPerWay  = 8   // entries kept per address and direction
	recentPreview = 256 // payload bytes kept per entry
)

// ActivityKind says what an activity entry records.
type ActivityKind uint8

// The kinds of activity.
const (
	// Received: a message the function took in.
	Received ActivityKind = iota + 1
	// DeadLettered: a message that was dead-lettered instead.
	DeadLettered
	// Sent: a message the function sent to another address.
	Sent
	// SentDelayed: a delayed message the function scheduled.
	SentDelayed
	// Emitted: an egress record the function produced.
	Emitted
)

func (k ActivityKind) String() string {
	switch k {
	case Received:
		return "received"
	case DeadLettered:
		return "dead-lettered"
	case Sent:
		return "sent"
	case SentDelayed:
		return "delayed"
	case Emitted:
		return "egress"
	}
	return "unknown"
}

// ActivityEntry is one message an address received or sent.
type ActivityEntry struct {
	// At is when its effects were applied, on the wall clock.
	At   time.Time
	Kind ActivityKind
	// Peer is the caller of a received message (empty for one from an
	// ingress or a delayed message of its own) or the target of a sent one.
	Peer Address
	// Egress is the egress of an emitted record.
	Egress   string
	Typename string
	// Size is the payload's size; Preview its first bytes.
	Size    int
	Preview []byte
	// Note says more: the reason of a dead letter, the delay of a delayed
	// message.
	Note string
}

// Activity is the recent activity of one address, oldest first.
type Activity struct {
	Received []ActivityEntry
	Sent     []ActivityEntry
}

// recent keeps the activity of the addresses active last.
type recent struct {
	max   int
	byKey map[Address]*addrActivity
	// A circular list, most recently used first after head.
	head addrActivity
}

type addrActivity struct {
	addr       Address
	in, out    ring
	prev, next *addrActivity
}

// ring holds the last recentPerWay entries of one direction.
type ring struct {
	entries [recentPerWay]ActivityEntry
	n, next int
}

func newRecent(max int) *recent {
	r := &recent{max: max, byKey: make(map[Address]*addrActivity)}
	r.head.prev, r.head.next = &r.head, &r.head
	return r
}

// of returns the activity of addr, making it the most recently used, and
// evicting the least recently used address when there are too many.
func (r *recent) of(addr Address) *addrActivity {
	a := r.byKey[addr]
	if a != nil {
		a.unlink()
	} else if len(r.byKey) >= r.max {
		a = r.head.prev
		a.unlink()
		delete(r.byKey, a.addr)
		a.addr = addr
		a.in.n, a.in.next, a.out.n, a.out.next = 0, 0, 0, 0
		r.byKey[addr] = a
	} else {
		a = &addrActivity{addr: addr}
		r.byKey[addr] = a
	}
	a.prev, a.next = &r.head, r.head.next
	r.head.next.prev = a
	r.head.next = a
	return a
}

func (a *addrActivity) unlink() {
	a.prev.next, a.next.prev = a.next, a.prev
}

// add records an entry, reusing the buffer of the one it replaces.
func (g *ring) add(at time.Time, kind ActivityKind, peer Address, egress, typename string, payload []byte, note string) {
	e := &g.entries[g.next]
	g.next = (g.next + 1) % recentPerWay
	g.n = min(g.n+1, recentPerWay)
	e.At, e.Kind, e.Peer, e.Egress, e.Typename, e.Size, e.Note = at, kind, peer, egress, typename, len(payload), note
	e.Preview = append(e.Preview[:0], payload[:min(len(payload), recentPreview)]...)
}

// list copies the entries out, oldest first.
func (g *ring) list() []ActivityEntry {
	out := make([]ActivityEntry, 0, g.n)
	for i := range g.n {
		e := g.entries[(g.next-g.n+i+recentPerWay)%recentPerWay]
		e.Preview = append([]byte(nil), e.Preview...)
		out = append(out, e)
	}
	return out
}

// recordApplied records a batch whose effects were applied: the messages
// received, and the messages, delayed messages and egress records sent.
func (c *Core) recordApplied(b *mailbox, eff *twinflowv1.Effects, at time.Time) {
	if c.recent == nil {
		return
	}
	a := c.recent.of(b.addr)
	// A ring keeps the last recentPerWay entries: of a longer list, only
	// its tail would stay, so only the tail is recorded.
	in := last(b.inflight)
	for i := range in {
		e := &in[i]
		a.in.add(at, Received, e.Caller, "", e.Typename, e.Payload, "")
	}
	for _, o := range last(eff.GetOutgoing()) {
		a.out.add(at, Sent, Address{Type: o.GetTarget().GetType(), ID: o.GetTarget().GetId()}, "",
			o.GetArgument().GetTypename(), o.GetArgument().GetValue(), "")
	}
	for _, d := range last(eff.GetDelayed()) {
		a.out.add(at, SentDelayed, Address{Type: d.GetTarget().GetType(), ID: d.GetTarget().GetId()}, "",
			d.GetArgument().GetTypename(), d.GetArgument().GetValue(), (time.Duration(d.GetDelayMillis()) * time.Millisecond).String())
	}
	for _, e := range last(eff.GetEgress()) {
		a.out.add(at, Emitted, Address{}, e.GetEgress(), e.GetValue().GetTypename(), e.GetValue().GetValue(), "")
	}
}

// last returns the tail of s that a ring keeps.
func last[T any](s []T) []T {
	return s[max(0, len(s)-recentPerWay):]
}

// recordDeadLettered records the messages of a batch that was
// dead-lettered, with the reason.
func (c *Core) recordDeadLettered(b *mailbox, reason string) {
	if c.recent == nil {
		return
	}
	a := c.recent.of(b.addr)
	at := c.env.Wall()
	for i := range b.inflight {
		e := &b.inflight[i]
		a.in.add(at, DeadLettered, e.Caller, "", e.Typename, e.Payload, reason)
	}
}

// Activity returns what addr received and sent lately, and false when the
// shard has no record of it (it was not active since the start, or not
// among the addresses active last).
func (c *Core) Activity(addr Address) (Activity, bool) {
	if c.recent == nil {
		return Activity{}, false
	}
	a := c.recent.byKey[addr]
	if a == nil {
		return Activity{}, false
	}
	return Activity{Received: a.in.list(), Sent: a.out.list()}, true
}
