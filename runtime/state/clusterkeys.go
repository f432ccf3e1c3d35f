package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// What cluster mode keeps in a key group's own range, so that whoever owns
// the key group next restores it from the key group's changelog alone:
//
//	[kg][0x11][reader]         reader position    -> stream sequence u64 BE
//	[kg][0x12][msg id]         unpublished egress -> storagev1.EgressRecord
//	[kg][0x13][to kg u16 BE]   messages sent      -> last sequence u64 BE
//	[kg][0x14][from kg u16 BE] messages received  -> high-water mark u64 BE
//
// A reader position is the sequence of its stream up to which the key
// group's messages are in the key group's state or mailboxes. Messages
// between workers are numbered per (sending, receiving) key group; the
// receiver drops one at or below its high-water mark for the sender.
const (
	kindReaderPos = 0x11
	kindEgress    = 0x12
	kindSentSeq   = 0x13
	kindRecvMark  = 0x14
)

func readerPosKey(kg int, reader string) []byte {
	return append(appendKG(nil, kg, kindReaderPos), reader...)
}

func kgPairKey(kg int, kind byte, other int) []byte {
	return binary.BigEndian.AppendUint16(appendKG(nil, kg, kind), uint16(other))
}

func putU64(o *Overlay, key []byte, v uint64) { o.Set(key, binary.BigEndian.AppendUint64(nil, v)) }

func readU64(s *Store, key []byte) (uint64, error) {
	b, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state: %q: %w", key, err)
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, fmt.Errorf("state: %q is corrupt (%d bytes)", key, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// PutReaderPosition records in o that key group kg has read stream reader
// up to seq.
func PutReaderPosition(o *Overlay, kg int, reader string, seq uint64) {
	putU64(o, readerPosKey(kg, reader), seq)
}

// ReaderPosition returns how far key group kg has read stream reader, 0
// for not at all.
func (s *Store) ReaderPosition(kg int, reader string) (uint64, error) {
	return readU64(s, readerPosKey(kg, reader))
}

// PutSent records in o the sequence of the last message batch key group kg
// sent to key group to.
func PutSent(o *Overlay, kg, to int, seq uint64) { putU64(o, kgPairKey(kg, kindSentSeq, to), seq) }

// Sent returns the sequence of the last message batch key group kg sent to
// key group to, 0 for none.
func (s *Store) Sent(kg, to int) (uint64, error) { return readU64(s, kgPairKey(kg, kindSentSeq, to)) }

// PutReceived records in o the high-water mark of the message batches key
// group kg received from key group from.
func PutReceived(o *Overlay, kg, from int, seq uint64) {
	putU64(o, kgPairKey(kg, kindRecvMark, from), seq)
}

// Received returns the high-water mark of the message batches key group kg
// received from key group from, 0 for none.
func (s *Store) Received(kg, from int) (uint64, error) {
	return readU64(s, kgPairKey(kg, kindRecvMark, from))
}

func kgEgressKey(kg int, msgID string) []byte {
	return append(appendKG(nil, kg, kindEgress), msgID...)
}

// PutKeyGroupEgress records in o an exactly-once egress record that key
// group kg's owner publishes once the checkpoint o is part of is durable.
func PutKeyGroupEgress(o *Overlay, kg int, r *storagev1.EgressRecord) error {
	if r.GetMsgId() == "" {
		return errors.New("state: egress record without a message id")
	}
	b, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("state: egress record %s: %w", r.GetMsgId(), err)
	}
	o.Set(kgEgressKey(kg, r.GetMsgId()), b)
	return nil
}

// DeleteKeyGroupEgress records in o that a record of key group kg was
// published.
func DeleteKeyGroupEgress(o *Overlay, kg int, msgID string) { o.Delete(kgEgressKey(kg, msgID)) }

// KeyGroupEgress returns key group kg's unpublished egress records, in
// order of their message ids.
func (s *Store) KeyGroupEgress(kg int) ([]*storagev1.EgressRecord, error) {
	lo, hi := kindBounds(kg, kindEgress)
	var out []*storagev1.EgressRecord
	err := NewView(s).Scan(lo, hi, func(key, val []byte) error {
		r := new(storagev1.EgressRecord)
		if err := proto.Unmarshal(val, r); err != nil {
			return fmt.Errorf("state: egress record %q: %w", key[3:], err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// WriteNow writes o to the store at once, synced, outside any checkpoint.
func (s *Store) WriteNow(op string, o *Overlay) error {
	b := s.db.NewBatch()
	defer b.Close()
	var err error
	o.each(func(k string, v []byte) {
		if err != nil {
			return
		}
		if v == nil {
			err = b.Delete([]byte(k), nil)
		} else {
			err = b.Set([]byte(k), v, nil)
		}
	})
	if err != nil {
		return err
	}
	return s.write(op, b)
}

// HoldsKeyGroup reports whether the store holds any key of key group kg,
// or a position for it.
func (s *Store) HoldsKeyGroup(kg int) (bool, error) {
	if _, ok, err := s.Position(kg); err != nil || ok {
		return ok, err
	}
	lo, hi := KeyGroupBounds(kg)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, err
	}
	found := it.First()
	return found, it.Close()
}

// DropKeyGroup deletes every key of key group kg and its position: the
// worker no longer owns it, and must not read or fire anything of it.
func (s *Store) DropKeyGroup(kg int) error {
	lo, hi := KeyGroupBounds(kg)
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Delete(positionKey(kg), nil)
	_ = b.DeleteRange(lo, hi, nil)
	if err := s.write("drop key group", b); err != nil {
		return fmt.Errorf("state: drop key group %d: %w", kg, err)
	}
	return nil
}
