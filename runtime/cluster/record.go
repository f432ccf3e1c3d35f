package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Record format
//
// A key group's changes in one checkpoint, and a snapshot of a key group,
// are both a sequence of entries, each a key of the key group with its new
// value or a delete:
//
//	[len(suffix) uvarint][suffix][0 uvarint]                  delete
//	[len(suffix) uvarint][suffix][len(value)+1 uvarint][value] set
//
// where suffix is the key without its 2-byte key group prefix (the subject
// or object name says the key group). The sequence is compressed as one S2
// stream (github.com/klauspost/compress/s2), preceded by a format byte:
//
//	[0x01][S2 stream of entries]
//
// S2 frames carry CRCs, so a damaged record or snapshot is an error rather
// than wrong state. Keys of one key group share long prefixes (function
// type, id, state name) and values their typenames: compression takes a
// typical checkpoint's changes of small counters to about a third (see
// docs/benchmarks.md). A record larger than a NATS message is cut into
// chunks, each a message; the chunks of one record are consecutive in the
// key group's subject and are joined before decoding.
const recordFormat = 0x01

// maxEntryPart bounds a key suffix or a value in a record: the 16 MiB a
// state value may be, with room for its encoding.
const maxEntryPart = 17 << 20

// s2BlockSize is the size of the S2 blocks records are written in. S2
// allocates its buffers by block, per writer and per reader: with its
// default (1 MiB) a record of a few entries cost megabytes of allocation and
// milliseconds. Writers and readers are pooled.
const s2BlockSize = 64 << 10

var (
	s2Writers = sync.Pool{New: func() any {
		return s2.NewWriter(nil, s2.WriterBlockSize(s2BlockSize), s2.WriterConcurrency(1))
	}}
	s2Readers = sync.Pool{New: func() any {
		return s2.NewReader(nil, s2.ReaderMaxBlockSize(s2BlockSize))
	}}
)

// errMalformedRecord marks a record or snapshot that does not decode.
var errMalformedRecord = errors.New("malformed changelog record or snapshot")

// recordWriter encodes entries of key group kg into w.
type recordWriter struct {
	kg      int
	prefix  [2]byte
	s2      *s2.Writer
	buf     []byte
	entries int
	err     error
}

func newRecordWriter(w io.Writer, kg int) (*recordWriter, error) {
	if _, err := w.Write([]byte{recordFormat}); err != nil {
		return nil, err
	}
	sw := s2Writers.Get().(*s2.Writer)
	sw.Reset(w)
	return &recordWriter{kg: kg, prefix: [2]byte{byte(kg >> 8), byte(kg)}, s2: sw}, nil
}

// add encodes one entry: val nil is a delete. key must be a key of the key
// group, not its bare prefix.
func (r *recordWriter) add(key, val []byte) error {
	if r.err != nil {
		return r.err
	}
	if len(key) < 3 || key[0] != r.prefix[0] || key[1] != r.prefix[1] {
		r.err = fmt.Errorf("key %q is not a key of key group %d", key, r.kg)
		return r.err
	}
	b := binary.AppendUvarint(r.buf[:0], uint64(len(key)-2))
	b = append(b, key[2:]...)
	if val == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(val))+1)
		b = append(b, val...)
	}
	r.buf = b
	if _, err := r.s2.Write(b); err != nil {
		r.err = err
		return err
	}
	r.entries++
	return nil
}

// close flushes the stream; the writer is not used afterwards, whatever
// the outcome.
func (r *recordWriter) close() error {
	err := r.err
	if err == nil {
		err = r.s2.Close()
	}
	r.s2.Reset(nil)
	s2Writers.Put(r.s2)
	r.s2 = nil
	if r.err == nil {
		r.err = errors.New("record writer closed")
	}
	return err
}

// encodeRecord encodes the changes of key group kg.
func encodeRecord(kg int, changes iter.Seq2[[]byte, []byte]) (data []byte, entries int, err error) {
	var buf bytes.Buffer
	w, err := newRecordWriter(&buf, kg)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range changes {
		if err := w.add(k, v); err != nil {
			_ = w.close()
			return nil, 0, err
		}
	}
	n := w.entries
	if err := w.close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n, nil
}

// decodeRecord reads the entries of key group kg from r and calls fn with
// each full key and its value (nil for a delete). key and val are valid
// only during the call.
func decodeRecord(r io.Reader, kg int, fn func(key, val []byte) error) (entries int, err error) {
	var format [1]byte
	if _, err := io.ReadFull(r, format[:]); err != nil {
		return 0, fmt.Errorf("%w: no format byte: %v", errMalformedRecord, err)
	}
	if format[0] != recordFormat {
		return 0, fmt.Errorf("%w: format %d; this build reads format %d only", errMalformedRecord, format[0], recordFormat)
	}
	sr := s2Readers.Get().(*s2.Reader)
	sr.Reset(r)
	defer func() {
		sr.Reset(nil)
		s2Readers.Put(sr)
	}()
	br := sr // buffered, and a ByteReader
	key := []byte{byte(kg >> 8), byte(kg)}
	val := []byte{} // never nil: nil is a delete
	for {
		n, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return entries, fmt.Errorf("%w: entry %d: %v", errMalformedRecord, entries, err)
		}
		if n == 0 || n > maxEntryPart {
			return entries, fmt.Errorf("%w: entry %d: key of %d bytes", errMalformedRecord, entries, n)
		}
		key = slices.Grow(key[:2], int(n))[:2+n]
		if _, err := io.ReadFull(br, key[2:]); err != nil {
			return entries, fmt.Errorf("%w: entry %d: %v", errMalformedRecord, entries, unexpected(err))
		}
		m, err := binary.ReadUvarint(br)
		if err != nil {
			return entries, fmt.Errorf("%w: entry %d: %v", errMalformedRecord, entries, unexpected(err))
		}
		if m > maxEntryPart+1 {
			return entries, fmt.Errorf("%w: entry %d: value of %d bytes", errMalformedRecord, entries, m-1)
		}
		var v []byte // nil: a delete
		if m > 0 {
			val = slices.Grow(val[:0], int(m-1))[:m-1]
			if _, err := io.ReadFull(br, val); err != nil {
				return entries, fmt.Errorf("%w: entry %d: %v", errMalformedRecord, entries, unexpected(err))
			}
			v = val
		}
		if err := fn(key, v); err != nil {
			return entries, err
		}
		entries++
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunks cuts data into pieces of at most size bytes; there is always at
// least one.
func chunks(data []byte, size int) [][]byte {
	out := make([][]byte, 0, len(data)/size+1)
	for len(data) > size {
		out = append(out, data[:size])
		data = data[size:]
	}
	return append(out, data)
}
