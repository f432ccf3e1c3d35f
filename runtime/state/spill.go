package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// spillKey is the key of the spilled message seq of addr.
func spillKey(dst []byte, kg int, addr Address, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendAddress(appendKG(dst, kg, kindSpill), addr), seq)
}

// PutSpilled stores message seq of addr's spilled backlog in the current
// overlay and returns its size as stored.
func (l *Layers) PutSpilled(kg int, addr Address, seq uint64, p *storagev1.Pending) (int64, error) {
	key := spillKey(nil, kg, addr, seq)
	val, err := proto.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("state: spilling a message of %s: %w", addr, err)
	}
	l.overlay.Set(key, val)
	return int64(len(key) + len(val)), nil
}

// TakeSpilled returns up to n messages of addr's spilled backlog from
// sequence from on, oldest first, deletes them in the current overlay, and
// returns their size as stored.
func (l *Layers) TakeSpilled(kg int, addr Address, from uint64, n int) ([]*storagev1.Pending, int64, error) {
	lo := spillKey(nil, kg, addr, from)
	hi := appendPrefixEnd(nil, lo[:len(lo)-8])
	var (
		out   []*storagev1.Pending
		keys  [][]byte
		bytes int64
	)
	err := l.v.Scan(lo, hi, func(key, val []byte) error {
		p := new(storagev1.Pending)
		if err := proto.Unmarshal(val, p); err != nil {
			return fmt.Errorf("state: spilled message %x of %s: %w", key[len(key)-8:], addr, err)
		}
		out = append(out, p)
		keys = append(keys, append([]byte(nil), key...))
		bytes += int64(len(key) + len(val))
		if len(out) == n {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, 0, err
	}
	for _, k := range keys {
		l.overlay.Delete(k)
	}
	return out, bytes, nil
}
