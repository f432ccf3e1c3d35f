package state

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
)

const (
	afterWrite  = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE
	afterInvoke = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE
)

func TestReadAddress(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	srv := Address{"dc/server", "s1"}
	// Addresses whose encodings are close to srv's.
	near := []Address{{"dc/server", "s10"}, {"dc/server", "s"}, {"dc/serve", "rs1"}, {"dc/server1", ""}}

	o := NewOverlay()
	PutValue(o, 1, srv, "a", Value{Typename: "t/a", Data: []byte("1")})
	PutValue(o, 1, srv, "b", Value{Typename: "t/b", Data: []byte("2")})
	PutValue(o, 2, srv, "a", Value{Typename: "t/a", Data: []byte("other key group")})
	for _, a := range near {
		PutValue(o, 1, a, "a", Value{Typename: "t/a", Data: []byte("neighbour")})
	}
	commit(t, s, o)

	cur := NewOverlay()
	PutValue(cur, 1, srv, "c", Value{Typename: "t/c", Data: []byte("3")})
	DeleteValue(cur, 1, srv, "b")
	vals, expired, err := ReadAddress(NewView(s, cur), 1, srv, 0)
	if err != nil || len(expired) != 0 {
		t.Fatal(err, expired)
	}
	if len(vals) != 2 || string(vals["a"].Data) != "1" || vals["c"].Typename != "t/c" {
		t.Errorf("ReadAddress = %v", vals)
	}
	if vals, _, err := ReadAddress(NewView(s), 1, Address{"dc/server", "none"}, 0); err != nil || vals != nil {
		t.Errorf("ReadAddress of an address without state = %v, %v", vals, err)
	}
}

func TestExpiry(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	srv := Address{"dc/server", "s1"}
	const t0 = 1_700_000_000_000

	o := NewOverlay()
	PutValue(o, 1, srv, "forever", Value{Typename: "t", Data: []byte("f")}.Refreshed(t0))
	PutValue(o, 1, srv, "write", Value{Typename: "t", Expiry: afterWrite, ExpireAfterMillis: 1000}.Refreshed(t0))
	PutValue(o, 1, srv, "invoke", Value{Typename: "t", Expiry: afterInvoke, ExpireAfterMillis: 1000}.Refreshed(t0))
	commit(t, s, o)

	o = NewOverlay()
	v := NewView(s, o)
	vals, expired, err := ReadAddress(v, 1, srv, t0+999)
	if err != nil || len(vals) != 3 || len(expired) != 0 {
		t.Fatalf("at t0+999: %v, %d expired, %v", vals, len(expired), err)
	}
	if got := vals["write"].ExpiresAtMillis; got != t0+1000 {
		t.Errorf("ExpiresAtMillis = %d, want %d", got, t0+1000)
	}
	// An invocation at t0+999 restarts the after-invoke expiry only.
	Touch(o, 1, srv, vals, t0+999)
	if got := vals["invoke"].ExpiresAtMillis; got != t0+1999 {
		t.Errorf("after Touch, ExpiresAtMillis = %d, want %d", got, t0+1999)
	}

	vals, expired, err = ReadAddress(v, 1, srv, t0+1000)
	if err != nil || len(vals) != 2 || vals["write"].Data != nil || len(expired) != 1 || string(expired[0]) != string(ValueKey(1, srv, "write")) {
		t.Fatalf("at t0+1000: %v, expired %q, %v", vals, expired, err)
	}
	vals, expired, err = ReadAddress(v, 1, srv, t0+5000)
	if err != nil || len(vals) != 1 || len(expired) != 2 {
		t.Fatalf("at t0+5000: %v, expired %q, %v", vals, expired, err)
	}
	for _, k := range expired {
		o.Delete(k)
	}
	if vals, expired, _ := ReadAddress(v, 1, srv, t0+5000); len(vals) != 1 || len(expired) != 0 {
		t.Errorf("after deleting expired: %v, %q", vals, expired)
	}
}

func TestSweepExpired(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 16)
	defer closeStore(t, s)
	const now = 10_000
	o := NewOverlay()
	live, dead := 0, 0
	for i := range 200 {
		addr := Address{"dc/server", fmt.Sprint("s", i)}
		kg := keygroup.Of(addr.ID, 16)
		val := Value{Typename: "t", Expiry: afterWrite, ExpireAfterMillis: 100}
		if i%3 == 0 {
			val = val.Refreshed(now - 100) // expired at now
			dead++
		} else {
			val = val.Refreshed(now)
			live++
		}
		PutValue(o, kg, addr, "v", val)
		// Timers and mailboxes between the values are not swept.
		if _, err := PutTimer(NewView(s, o), o, kg, timer("dc/server", "x", "", 1)); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, s, o)

	r := keygroup.Range{Lo: 0, Hi: 16}
	o = NewOverlay()
	v := NewView(s, o)
	var cursor []byte
	calls := 0
	for {
		next, err := SweepExpired(v, o, r, cursor, now, 7)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if next == nil {
			break
		}
		cursor = next
	}
	if want := (live + dead + 6) / 7; calls < want || calls > want+1 {
		t.Errorf("sweep took %d calls of 7, want about %d", calls, want)
	}
	if o.Len() != dead {
		t.Errorf("sweep deleted %d values, want %d", o.Len(), dead)
	}
	n := 0
	if err := v.Scan(nil, []byte{0xFF}, func(k, _ []byte) error {
		if _, _, _, err := DecodeValueKey(k); err == nil {
			n++
		}
		return nil
	}); err != nil || n != live {
		t.Errorf("after sweep %d values remain, want %d (%v)", n, live, err)
	}
	// A cursor outside the range starts over.
	if next, err := SweepExpired(v, o, keygroup.Range{Lo: 0, Hi: 1}, []byte{0, 5, 1}, now, 0); err != nil || next != nil {
		t.Errorf("sweep from a foreign cursor = %x, %v", next, err)
	}
}
