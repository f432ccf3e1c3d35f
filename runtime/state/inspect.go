package state

import (
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// TimersOf returns the pending delayed messages that owner scheduled, in
// due order. They are stored by due time, not by owner, so it looks
// through the delayed messages of the owner's key group kg, at most
// scanLimit of them (all when scanLimit <= 0), and reports whether it had
// to stop before their end.
func TimersOf(v View, kg int, owner Address, scanLimit int) (timers []*storagev1.Timer, truncated bool, err error) {
	lo, hi := kindBounds(kg, kindTimer)
	scanned := 0
	err = v.Scan(lo, hi, func(key, val []byte) error {
		if scanLimit > 0 && scanned == scanLimit {
			truncated = true
			return errStop
		}
		scanned++
		t, err := decodeTimer(key, val)
		if err != nil {
			return err
		}
		if o := t.GetOwner(); o.GetType() == owner.Type && o.GetId() == owner.ID {
			timers = append(timers, t)
		}
		return nil
	})
	if err == errStop {
		err = nil
	}
	return timers, truncated, err
}
