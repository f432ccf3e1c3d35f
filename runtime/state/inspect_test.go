package state

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestTimersOf(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 4)
	defer closeStore(t, s)
	o := NewOverlay()
	v := NewView(s, o)
	for i, tm := range []struct {
		id  string
		due int64
	}{{"a", 30}, {"b", 10}, {"a", 20}, {"ab", 5}, {"a", 40}} {
		if _, err := PutTimer(v, o, 1, timer("dc/server", tm.id, "", tm.due+int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := PutTimer(v, o, 2, timer("dc/server", "a", "", 1)); err != nil { // another key group
		t.Fatal(err)
	}
	got, truncated, err := TimersOf(v, 1, Address{"dc/server", "a"}, 0)
	if err != nil || truncated {
		t.Fatal(err, truncated)
	}
	var dues []int64
	for _, tm := range got {
		dues = append(dues, tm.GetDueUnixMillis())
	}
	if len(dues) != 3 || dues[0] != 22 || dues[1] != 30 || dues[2] != 44 {
		t.Errorf("timers of a: due %v, want [22 30 44]", dues)
	}
	got, truncated, err = TimersOf(v, 1, Address{"dc/server", "a"}, 3)
	if err != nil || !truncated || len(got) != 1 {
		t.Errorf("TimersOf looking through 3 = %d timers, truncated %v, %v; want the 1 among the first 3, truncated", len(got), truncated, err)
	}
}
