package state

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/record"
)

// records writes Pebble records (as a MANIFEST holds them) of the given
// sizes and returns the file's bytes and where each record starts.
func records(t *testing.T, sizes ...int) ([]byte, []int) {
	t.Helper()
	var buf bytes.Buffer
	w := record.NewWriter(&buf)
	var starts []int
	for i, n := range sizes {
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, buf.Len())
		if _, err := w.WriteRecord(bytes.Repeat([]byte{byte('a' + i)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), starts
}

func TestCheckRecords(t *testing.T) {
	// The second record spans a block boundary: first, middle and last
	// chunks.
	data, starts := records(t, 100, 70<<10, 50)
	flip := func(at int) []byte {
		b := bytes.Clone(data)
		b[at] ^= 0x40
		return b
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		corrupt bool
	}{
		{"intact", data, false},
		{"zeroes after the records", append(bytes.Clone(data), make([]byte, 100)...), false},
		{"last record cut short", data[:len(data)-20], false},
		{"last header cut short", data[:starts[2]+3], false},
		{"first record flipped", flip(starts[0] + 20), true},
		{"spanning record flipped", flip(40 << 10), true},
		{"last record flipped", flip(len(data) - 10), true},
		{"chunk type flipped", flip(starts[0] + 6), true},
		{"zeroes then a record", append(append(bytes.Clone(data[:starts[1]]), make([]byte, 20)...), data[starts[1]:]...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, why := checkRecords(tc.data)
			if got := why != ""; got != tc.corrupt {
				t.Fatalf("checkRecords: corrupt = %v (%q at %d), want %v", got, why, off, tc.corrupt)
			}
		})
	}
}

func TestVerifyAcceptsNewAndIntactStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := Verify(dir, nil); err != nil {
		t.Fatalf("a directory that does not exist: %v", err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := NewOverlay()
	o.Set([]byte("k"), []byte("v"))
	if _, err := s.Commit([]*Overlay{o}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, nil); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Errorf("Verify of an open store = %v; want the lock refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir, nil); err != nil {
		t.Fatalf("an intact store: %v", err)
	}
}
