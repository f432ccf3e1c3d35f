package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

type entry struct {
	key, val []byte // val nil: delete
}

func (e entry) String() string {
	if e.val == nil {
		return fmt.Sprintf("%x deleted", e.key)
	}
	return fmt.Sprintf("%x=%q", e.key, e.val)
}

func seqOf(es []entry) func(func([]byte, []byte) bool) {
	return func(yield func([]byte, []byte) bool) {
		for _, e := range es {
			if !yield(e.key, e.val) {
				return
			}
		}
	}
}

func decodeAll(t *testing.T, data []byte, kg int) ([]entry, error) {
	t.Helper()
	var out []entry
	_, err := decodeRecord(bytes.NewReader(data), kg, func(k, v []byte) error {
		e := entry{key: slices.Clone(k)}
		if v != nil {
			e.val = slices.Clone(v)
			if e.val == nil {
				e.val = []byte{}
			}
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func TestRecordRoundTrip(t *testing.T) {
	kg := 0x1FF
	p := []byte{0x01, 0xFF}
	es := []entry{
		{append(slices.Clone(p), 0x01, 'a'), []byte("value")},
		{append(slices.Clone(p), 0x01, 'b'), nil},
		{append(slices.Clone(p), 0x02), []byte{}},
		{append(slices.Clone(p), bytes.Repeat([]byte{0x06}, 300)...), bytes.Repeat([]byte("x"), 5<<20)},
	}
	data, n, err := encodeRecord(kg, seqOf(es))
	if err != nil || n != len(es) {
		t.Fatalf("encode: %d entries, %v", n, err)
	}
	got, err := decodeAll(t, data, kg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(es) {
		t.Fatalf("decoded %d entries, want %d", len(got), len(es))
	}
	for i := range es {
		if !bytes.Equal(got[i].key, es[i].key) || (got[i].val == nil) != (es[i].val == nil) || !bytes.Equal(got[i].val, es[i].val) {
			t.Fatalf("entry %d: got %.80s, want %.80s", i, got[i], es[i])
		}
	}
	// Cut into chunks and joined again, it decodes the same.
	var joined []byte
	for _, c := range chunks(data, 1000) {
		if len(c) > 1000 {
			t.Fatalf("chunk of %d bytes", len(c))
		}
		joined = append(joined, c...)
	}
	if !bytes.Equal(joined, data) {
		t.Fatal("chunks do not join into the record")
	}
}

func TestRecordRefusesForeignKeys(t *testing.T) {
	for _, key := range [][]byte{{0x00, 0x08, 0x01}, {0xFF, 0x01}, {0x00, 0x07}} {
		_, _, err := encodeRecord(7, seqOf([]entry{{key, []byte("v")}}))
		if err == nil || !strings.Contains(err.Error(), "not a key of key group 7") {
			t.Errorf("key %x: err %v, want one saying it is not a key of key group 7", key, err)
		}
	}
}

func TestRecordDetectsDamage(t *testing.T) {
	es := []entry{{[]byte{0, 3, 1, 'a'}, []byte(strings.Repeat("some state ", 100))}}
	data, _, err := encodeRecord(3, seqOf(es))
	if err != nil {
		t.Fatal(err)
	}
	for name, damaged := range map[string][]byte{
		"flipped byte": func() []byte { d := slices.Clone(data); d[len(d)/2] ^= 0x40; return d }(),
		"truncated":    data[:len(data)-3],
		"other format": append([]byte{9}, data[1:]...),
		"empty":        nil,
	} {
		if _, err := decodeAll(t, damaged, 3); !errors.Is(err, errMalformedRecord) {
			t.Errorf("%s: err %v, want a malformed record", name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	data, _, _ := encodeRecord(1, seqOf([]entry{{[]byte{0, 1, 1, 'k'}, []byte("v")}, {[]byte{0, 1, 2}, nil}}))
	f.Add(data)
	f.Add([]byte{recordFormat})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeRecord(bytes.NewReader(b), 1, func(k, v []byte) error {
			if len(k) < 3 || k[0] != 0 || k[1] != 1 {
				t.Fatalf("decoded key %x outside key group 1", k)
			}
			return nil
		})
	})
}
