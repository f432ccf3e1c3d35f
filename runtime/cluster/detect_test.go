package cluster

import (
	"testing"
	"time"
)

func TestSuspects(t *testing.T) {
	ttl := 4 * time.Second
	t0 := time.Unix(1000, 0)
	self := Holder{"s", "1"}
	table := func(selfSeen, otherSeen time.Time, selfInc string) Table {
		return Table{Members: map[string]MemberEntry{
			"s": {Member: Member{Worker: "s", Incarnation: selfInc}, Seen: selfSeen},
			"o": {Member: Member{Worker: "o", Incarnation: "1"}, Seen: otherSeen},
		}}
	}
	for _, tc := range []struct {
		name     string
		t        Table
		now      time.Time
		resumed  time.Time
		suspects int
	}{
		{"other silent past the TTL", table(t0.Add(9*time.Second), t0, "1"), t0.Add(10 * time.Second), t0, 1},
		{"other silent for less than the TTL", table(t0.Add(9*time.Second), t0.Add(7*time.Second), "1"), t0.Add(10 * time.Second), t0, 0},
		{"own heartbeats missing too: no judgement", table(t0.Add(7*time.Second), t0, "1"), t0.Add(10 * time.Second), t0, 0},
		{"own heartbeats back just now: a full TTL for the others", table(t0.Add(10*time.Second), t0, "1"), t0.Add(10 * time.Second), t0.Add(9 * time.Second), 0},
		{"a TTL after own heartbeats came back", table(t0.Add(14*time.Second), t0, "1"), t0.Add(14 * time.Second), t0.Add(9 * time.Second), 1},
		{"own key is another incarnation's: no judgement", table(t0.Add(9*time.Second), t0, "2"), t0.Add(10 * time.Second), t0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := suspects(tc.t, self, tc.now, tc.resumed, ttl)
			if len(got) != tc.suspects {
				t.Fatalf("%d suspects (%v), want %d", len(got), got, tc.suspects)
			}
			for _, s := range got {
				if s.Worker == "s" {
					t.Fatal("a member suspects itself")
				}
			}
		})
	}
}
