package cluster

import (
	"sort"
	"time"
)

// Failure detection
//
// Members judge each other: a member whose heartbeats nobody has seen for
// MemberTTL is dead, and the member that notices deletes its key (a
// compare-and-set on the revision it last saw, so that a heartbeat that
// comes meanwhile wins). The dead worker learns it at its next heartbeat,
// which its key's deletion makes fail.
//
// NATS could expire the keys itself (a per-message TTL), but then a leader
// election of the bucket's stream, which takes 4 to 9 s after a server is
// killed and during which no heartbeat gets through, expires every member at
// once: every key group would move. A member only judges others while its
// own heartbeats come back to it through its watch; silence while its own
// are missing proves nothing (the bucket, or its connection, is down), and
// once its own come back, everybody gets a full TTL again from then.

// suspects returns the members of t that self, at now, judges dead: those
// not seen for ttl, counting from resumed at the earliest (when self's own
// heartbeats were last seen again after a gap). It returns nothing unless
// self's own latest heartbeat was seen within ttl/2: only then does the
// silence of others mean something. It is a pure function; the membership
// calls it on every heartbeat.
func suspects(t Table, self Holder, now, resumed time.Time, ttl time.Duration) []MemberEntry {
	me, ok := t.Members[self.Worker]
	if !ok || me.Incarnation != self.Incarnation || now.Sub(me.Seen) > ttl/2 {
		return nil
	}
	var out []MemberEntry
	for id, e := range t.Members {
		if id == self.Worker {
			continue
		}
		since := e.Seen
		if resumed.After(since) {
			since = resumed
		}
		if now.Sub(since) > ttl {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker < out[j].Worker })
	return out
}
