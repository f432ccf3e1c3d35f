package state

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

func TestValueKeyRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tt := range []struct {
		kg   int
		addr Address
		name string
	}{
		{0, Address{"datacenter/server", "srv-0042"}, "metrics"},
		{127, Address{"", ""}, ""},
		{maxKeyGroup, Address{long, long}, long},
		{5, Address{"a/b", "ünï\x00\xff"}, "\xff\x00"},
	} {
		key := ValueKey(tt.kg, tt.addr, tt.name)
		if !bytes.HasPrefix(key, AddressPrefix(tt.kg, tt.addr)) {
			t.Errorf("ValueKey(%v) does not start with its address prefix", tt)
		}
		kg, addr, name, err := DecodeValueKey(key)
		if err != nil || kg != tt.kg || addr != tt.addr || name != tt.name {
			t.Errorf("DecodeValueKey(ValueKey(%d, %v, %q)) = %d, %v, %q, %v", tt.kg, tt.addr, tt.name, kg, addr, name, err)
		}
		if got, ok := KeyGroupOf(key); !ok || got != tt.kg {
			t.Errorf("KeyGroupOf = %d, %v, want %d", got, ok, tt.kg)
		}
	}
}

func TestDecodeValueKeyRejects(t *testing.T) {
	for _, key := range [][]byte{
		nil,
		{0, 1},
		{0xFF, 0x01, 0x01},
		{0, 1, kindTimer, 0},
		{0, 1, kindValue, 5, 'a'},
		{0, 1, kindValue, 1, 'a', 9},
		{0, 1, kindValue, 0xFF, 0xFF},
	} {
		if _, _, _, err := DecodeValueKey(key); err == nil {
			t.Errorf("DecodeValueKey(%q) succeeded", key)
		}
	}
}

func TestTimerKeyOrder(t *testing.T) {
	keys := [][]byte{
		TimerKey(3, 1000, 7),
		TimerKey(3, -5, 1),
		TimerKey(3, 1000, 2),
		TimerKey(3, 999, 99),
		TimerKey(3, math.MaxInt64, 0),
		TimerKey(3, 0, 0),
	}
	slices.SortFunc(keys, bytes.Compare)
	var got [][2]int64
	for _, k := range keys {
		kg, due, unique, err := DecodeTimerKey(k)
		if err != nil || kg != 3 {
			t.Fatalf("DecodeTimerKey(%x) = %d, %v", k, kg, err)
		}
		got = append(got, [2]int64{due, int64(unique)})
	}
	want := [][2]int64{{0, 0}, {0, 1}, {999, 99}, {1000, 2}, {1000, 7}, {math.MaxInt64, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("timer keys sort as %v, want %v", got, want)
	}
	// Timers of key group 3 sort after its values and before its token index.
	if bytes.Compare(ValueKey(3, Address{"\xff", "\xff"}, "\xff"), keys[0]) >= 0 ||
		bytes.Compare(keys[len(keys)-1], tokenKey(3, Address{}, "")) >= 0 {
		t.Error("key kinds are not ordered within the key group")
	}
}

func TestValueEncodingRoundTrip(t *testing.T) {
	for _, v := range []Value{
		{},
		{Typename: "twinflow/json", Data: []byte(`{"a":1}`)},
		{Typename: strings.Repeat("t", 200), Data: []byte{}, Expiry: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE, ExpireAfterMillis: 60_000, ExpiresAtMillis: 1_700_000_000_000},
		{Typename: "x", Data: bytes.Repeat([]byte{0xFF}, 1000), Expiry: twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE, ExpireAfterMillis: math.MaxInt64, ExpiresAtMillis: math.MaxInt64},
	} {
		enc := encodeValue(nil, v)
		if len(enc) > encodedValueLen(v) {
			t.Errorf("encodedValueLen = %d < %d", encodedValueLen(v), len(enc))
		}
		got, err := decodeValue(enc, true)
		if err != nil {
			t.Fatal(err)
		}
		if got.Typename != v.Typename || !bytes.Equal(got.Data, v.Data) || got.Expiry != v.Expiry ||
			got.ExpireAfterMillis != v.ExpireAfterMillis || got.ExpiresAtMillis != v.ExpiresAtMillis {
			t.Errorf("round trip of %+v = %+v", v, got)
		}
		if at, err := valueExpiresAt(enc); err != nil || at != v.ExpiresAtMillis {
			t.Errorf("valueExpiresAt = %d, %v, want %d", at, err, v.ExpiresAtMillis)
		}
		for i := range len(enc) - len(v.Data) {
			if _, err := decodeValue(enc[:i], false); err == nil {
				t.Errorf("decodeValue of %d of %d bytes succeeded", i, len(enc))
			}
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tt := range []struct{ in, want []byte }{
		{[]byte{1, 2}, []byte{1, 3}},
		{[]byte{1, 0xFF}, []byte{2}},
		{[]byte{0xFF, 0xFF}, nil},
	} {
		if got := prefixEnd(tt.in); !bytes.Equal(got, tt.want) {
			t.Errorf("prefixEnd(%x) = %x, want %x", tt.in, got, tt.want)
		}
	}
}

// FuzzKeys checks that value keys round-trip and that an address's keys
// never fall under another address's prefix, so that reading one address
// never returns another's values.
func FuzzKeys(f *testing.F) {
	f.Add(uint16(0), "datacenter/server", "srv-1", "metrics", "datacenter/server", "srv-10")
	f.Add(uint16(127), "a", "bc", "", "ab", "c")
	f.Add(uint16(1), "", "\x01a", "x", "\x01", "a")
	f.Fuzz(func(t *testing.T, kg uint16, typ, id, name, typ2, id2 string) {
		k := int(kg) & maxKeyGroup
		a, b := Address{typ, id}, Address{typ2, id2}
		key := ValueKey(k, a, name)
		gotKG, gotAddr, gotName, err := DecodeValueKey(key)
		if err != nil || gotKG != k || gotAddr != a || gotName != name {
			t.Fatalf("round trip of (%d, %v, %q) = (%d, %v, %q, %v)", k, a, name, gotKG, gotAddr, gotName, err)
		}
		pa := AddressPrefix(k, a)
		if !bytes.HasPrefix(key, pa) || bytes.Compare(key, prefixEnd(pa)) >= 0 {
			t.Fatalf("key %x is outside its address range", key)
		}
		if a != b && bytes.HasPrefix(key, AddressPrefix(k, b)) {
			t.Fatalf("key of %v, %q is under the prefix of %v", a, name, b)
		}
		tk := tokenKey(k, a, name)
		if a != b && bytes.HasPrefix(tk, tokenKey(k, b, "")) {
			t.Fatalf("token key of %v is under the prefix of %v", a, b)
		}
	})
}
