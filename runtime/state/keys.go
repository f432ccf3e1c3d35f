package state

// Key layout
//
// Everything a shard owns is stored under its key group, so that a key
// group's data is one contiguous key range that can later move between
// workers as a unit. kg is the key group as a 16-bit big-endian number;
// "enc(a)" is an address encoded as
//
//	[len(type) uvarint][type][len(id) uvarint][id]
//
// which is self-delimiting: no address's encoding is a prefix of another's.
//
//	[kg][0x01][enc(address)][name]        state value       -> value encoding (value.go)
//	[kg][0x02][due u64 BE][unique u64 BE]  delayed message   -> storagev1.Timer
//	[kg][0x03][enc(owner)][token]          cancellation token -> the timer's key
//	[kg][0x04]                             mailbox snapshot  -> storagev1.Mailbox
//	[kg][0x05]                             timer sequence    -> next unique, u64 BE
//	[kg][0x06][enc(address)][seq u64 BE]   spilled message   -> storagev1.Pending
//	[kg][0x07][len(type)][type][id]        address index     -> empty (index.go)
//	[kg][0x08][type]                       addresses of type -> count, u64 BE
//	[kg][0x10][enc(address)][key]          seen message key  -> expiry, Unix ms u64 BE
//	[kg][0x11..0x14]...                    cluster mode's positions, egress and message marks (clusterkeys.go)
//
// The address prefix [kg][0x01][enc(address)] covers all values of one
// address, so reading an address is one range scan. Timers sort by due time
// (Unix milliseconds; negative times are stored as 0) within a key group;
// unique comes from the key group's timer sequence, which is written in the
// same overlay as the timer and so restored consistently with it. A timer
// lives in the key group of its owner, the address that sent it, because
// only the owner's shard cancels it. Spilled messages are the part of an
// address's backlog kept out of memory, in order by seq; the mailbox
// snapshot says which sequences are live. A seen key marks a message
// with an idempotency key that reached the address, until it expires: a
// repeat of it is dropped.
//
// Metadata of the whole data directory belongs to no key group:
//
//	[0xFF][0x00]            layout version   -> uvarint (1)
//	[0xFF][0x01]            key groups K     -> uvarint
//	[0xFF][0x02][type]      state specs      -> storagev1.StateSpecs
//	[0xFF][0x03][id u64 BE] manifest         -> storagev1.Manifest
//	[0xFF][0x04][reader]    reader sequence  -> u64 BE
//	[0xFF][0x05][msg id]    unpublished egress -> storagev1.EgressRecord
//	[0xFF][0x06][kg u16 BE] changelog position -> seq u64 BE, epoch u64 BE
//
// Key groups are below 2^15, so no key group key starts with 0xFF.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Address names a function instance: function type and id. The shard
// converts it from and to the wire type.
type Address struct {
	Type string
	ID   string
}

// String formats a as "type/id", for example "datacenter/server/srv-0042".
func (a Address) String() string { return a.Type + "/" + a.ID }

// Key kinds within a key group.
const (
	kindValue    = 0x01
	kindTimer    = 0x02
	kindToken    = 0x03
	kindMailbox  = 0x04
	kindTimerSeq = 0x05
	kindSpill    = 0x06
	kindSeen     = 0x10
)

// Metadata keys.
const (
	metaPrefix    = 0xFF
	metaVersion   = 0x00
	metaKeyGroups = 0x01
	metaSpecs     = 0x02
	metaManifest  = 0x03
	metaReader    = 0x04
	metaEgress    = 0x05
	metaPosition  = 0x06
)

// layoutVersion is the version of this key layout and of the value
// encodings, stored in every data directory. Version 1 had no address
// index; opening such a directory builds it and records version 2.
const (
	layoutVersion        = 2
	layoutVersionNoIndex = 1
)

// maxKeyGroup bounds key groups so that they fit the 2-byte prefix and never
// start with the metadata byte.
const maxKeyGroup = 1<<15 - 1

func appendKG(dst []byte, kg int, kind byte) []byte {
	if kg < 0 || kg > maxKeyGroup {
		panic(fmt.Sprintf("state: key group %d out of range", kg))
	}
	return append(dst, byte(kg>>8), byte(kg), kind)
}

// appendAddress appends enc(a).
func appendAddress(dst []byte, a Address) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(a.Type)))
	dst = append(dst, a.Type...)
	dst = binary.AppendUvarint(dst, uint64(len(a.ID)))
	return append(dst, a.ID...)
}

func addressLen(a Address) int {
	return uvarintLen(uint64(len(a.Type))) + len(a.Type) + uvarintLen(uint64(len(a.ID))) + len(a.ID)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// AddressPrefix returns the prefix shared by the keys of all state values
// of addr in key group kg: the bounds of one range scan.
func AddressPrefix(kg int, addr Address) []byte {
	b := make([]byte, 0, 3+addressLen(addr))
	return appendAddress(appendKG(b, kg, kindValue), addr)
}

// ValueKey returns the key of the state value name of addr in key group kg.
func ValueKey(kg int, addr Address, name string) []byte {
	b := make([]byte, 0, 3+addressLen(addr)+len(name))
	b = appendAddress(appendKG(b, kg, kindValue), addr)
	return append(b, name...)
}

var errMalformedKey = errors.New("malformed key")

// KeyGroupOf returns the key group of a key, and false for a metadata key.
func KeyGroupOf(key []byte) (int, bool) {
	if len(key) < 2 || key[0] == metaPrefix {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(key)), true
}

// DecodeValueKey splits the key of a state value into its parts.
func DecodeValueKey(key []byte) (kg int, addr Address, name string, err error) {
	if len(key) < 3 || key[0] == metaPrefix || key[2] != kindValue {
		return 0, Address{}, "", fmt.Errorf("state: %w: %q is not a state value key", errMalformedKey, key)
	}
	kg = int(binary.BigEndian.Uint16(key))
	rest := key[3:]
	typ, rest, ok := readString(rest)
	if !ok {
		return 0, Address{}, "", fmt.Errorf("state: %w: bad function type in %q", errMalformedKey, key)
	}
	id, rest, ok := readString(rest)
	if !ok {
		return 0, Address{}, "", fmt.Errorf("state: %w: bad id in %q", errMalformedKey, key)
	}
	return kg, Address{Type: typ, ID: id}, string(rest), nil
}

// readString reads a uvarint-length-prefixed string.
func readString(b []byte) (s string, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	b = b[w:]
	return string(b[:n]), b[n:], true
}

// TimerKey returns the key of a delayed message of key group kg due at the
// Unix millisecond due, made unique by unique.
func TimerKey(kg int, due int64, unique uint64) []byte {
	b := make([]byte, 0, 3+16)
	b = appendKG(b, kg, kindTimer)
	b = binary.BigEndian.AppendUint64(b, uint64(max(due, 0)))
	return binary.BigEndian.AppendUint64(b, unique)
}

// DecodeTimerKey splits the key of a delayed message into its parts.
func DecodeTimerKey(key []byte) (kg int, due int64, unique uint64, err error) {
	if len(key) != 19 || key[0] == metaPrefix || key[2] != kindTimer {
		return 0, 0, 0, fmt.Errorf("state: %w: %q is not a timer key", errMalformedKey, key)
	}
	d := binary.BigEndian.Uint64(key[3:])
	if d > math.MaxInt64 {
		return 0, 0, 0, fmt.Errorf("state: %w: due time out of range in %q", errMalformedKey, key)
	}
	return int(binary.BigEndian.Uint16(key)), int64(d), binary.BigEndian.Uint64(key[11:]), nil
}

// timerBounds returns the range of the timers of kg due at or before now.
func timerBounds(kg int, now int64) (lo, hi []byte) {
	lo = appendKG(nil, kg, kindTimer)
	if now == math.MaxInt64 {
		return lo, appendKG(nil, kg, kindTimer+1)
	}
	return lo, binary.BigEndian.AppendUint64(appendKG(nil, kg, kindTimer), uint64(max(now+1, 0)))
}

// tokenKey returns the key of the cancellation token index entry.
func tokenKey(kg int, owner Address, token string) []byte {
	b := make([]byte, 0, 3+addressLen(owner)+len(token))
	b = appendAddress(appendKG(b, kg, kindToken), owner)
	return append(b, token...)
}

func mailboxKey(kg int) []byte  { return appendKG(nil, kg, kindMailbox) }
func timerSeqKey(kg int) []byte { return appendKG(nil, kg, kindTimerSeq) }

// kindBounds returns the range of all keys of one kind in key group kg.
func kindBounds(kg int, kind byte) (lo, hi []byte) {
	return appendKG(nil, kg, kind), appendKG(nil, kg, kind+1)
}

func metaKey(kind byte, suffix ...[]byte) []byte {
	b := []byte{metaPrefix, kind}
	for _, s := range suffix {
		b = append(b, s...)
	}
	return b
}

func metaBounds(kind byte) (lo, hi []byte) {
	return []byte{metaPrefix, kind}, []byte{metaPrefix, kind + 1}
}

func manifestKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{metaPrefix, metaManifest}, id)
}

// prefixEnd returns the smallest key greater than every key with the given
// prefix, or nil when there is none (the prefix is all 0xFF).
func prefixEnd(prefix []byte) []byte {
	return appendPrefixEnd(nil, prefix)
}

// appendPrefixEnd appends prefixEnd(prefix) to dst; it returns nil when
// there is no end.
func appendPrefixEnd(dst, prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xFF {
			dst = append(dst, prefix[:i+1]...)
			dst[len(dst)-1]++
			return dst
		}
	}
	return nil
}
