// Package workload is what the benchmark driver and its function endpoint
// agree on: the function type, the message encoding, the deterministic plan
// of which message goes where and does what, and a latency histogram.
//
// The driver decides everything in advance and writes it into each message:
// whether the receiving address sends a message on to another address
// (and to which), and whether it writes an exactly-once egress record. The
// function only follows the flags, so the driver knows, without asking it,
// the count every address must end with.
package workload

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Names shared by the driver, the module spec and the function.
const (
	// FunctionType is the keyed counter.
	FunctionType = "bench/counter"
	// Typename is the typename of every message.
	Typename = "bench/Msg"
	// Egress is the exactly-once egress the function writes to, and
	// EgressSubject the subject it publishes on.
	Egress        = "out"
	EgressSubject = "bench.out"
	// CountState is the state value each message increments.
	CountState = "count"
)

// Message flags.
const (
	// FlagForwarded marks a message sent by the function to another
	// address; it is counted and never sent on again.
	FlagForwarded = 1 << iota
	// FlagSend asks the receiver to send the message on to Msg.SendTo.
	FlagSend
	// FlagEgress asks the receiver to write the message to the egress.
	FlagEgress
)

// Msg is one benchmark message.
//
// Encoding: [flags][seq u64 BE][published unix nanos i64 BE][len(SendTo)
// u8][SendTo], then zero padding up to the message size.
type Msg struct {
	Flags byte
	Seq   uint64
	// Published is when the driver published the message (Unix
	// nanoseconds); 0 when it does not measure latency.
	Published int64
	// SendTo is the id of the address to send the message on to.
	SendTo string
}

const headerLen = 1 + 8 + 8 + 1

// publishedAt is the offset of Published in an encoded message.
const publishedAt = 1 + 8

// Append appends the encoding of m, padded to size bytes, to dst.
func (m Msg) Append(dst []byte, size int) []byte {
	start := len(dst)
	dst = append(dst, m.Flags)
	dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Published))
	dst = append(dst, byte(len(m.SendTo)))
	dst = append(dst, m.SendTo...)
	for len(dst)-start < size {
		dst = append(dst, 0)
	}
	return dst
}

// Stamp sets the publication time of an encoded message in place.
func Stamp(b []byte, unixNanos int64) {
	binary.BigEndian.PutUint64(b[publishedAt:], uint64(unixNanos))
}

// ErrMalformed is returned by Parse for bytes that are not a Msg.
var ErrMalformed = errors.New("workload: malformed message")

// Parse decodes a message.
func Parse(b []byte) (Msg, error) {
	if len(b) < headerLen {
		return Msg{}, ErrMalformed
	}
	n := int(b[headerLen-1])
	if len(b) < headerLen+n {
		return Msg{}, ErrMalformed
	}
	return Msg{
		Flags:     b[0],
		Seq:       binary.BigEndian.Uint64(b[1:]),
		Published: int64(binary.BigEndian.Uint64(b[publishedAt:])),
		SendTo:    string(b[headerLen : headerLen+n]),
	}, nil
}

// Forwarded returns the encoding of the message that the receiver of b
// sends on: the same message with FlagForwarded instead of its other flags.
func Forwarded(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	out[0] = FlagForwarded
	return out
}

// Plan is a deterministic workload: Messages messages over Addresses
// addresses. Message i goes to address Target(i); a fraction SendFraction
// of them is sent on to a second address, and a fraction EgressFraction
// writes an egress record. Decisions are a hash of (Seed, i), so any
// message can be computed on its own.
type Plan struct {
	Addresses      int
	Messages       int
	SendFraction   float64
	EgressFraction float64
	Seed           uint64
}

// stride spreads consecutive messages over the address space: a prime
// larger than any address count used, so it is coprime with all of them
// and message i and i+Addresses go to the same address.
const stride = 1_000_003

// Target returns the address index of message i.
func (p Plan) Target(i int) int {
	if p.Addresses <= 1 {
		return 0
	}
	if p.Addresses >= stride {
		return int(mix(p.Seed^0x9e37, uint64(i)) % uint64(p.Addresses))
	}
	return int((uint64(i)*stride + p.Seed) % uint64(p.Addresses))
}

// Message returns message i: its flags and, with FlagSend, the address
// index it is sent on to.
func (p Plan) Message(i int) (flags byte, sendTo int) {
	h := mix(p.Seed, uint64(i))
	if frac(h) < p.SendFraction {
		flags |= FlagSend
		sendTo = int(mix(p.Seed+1, uint64(i)) % uint64(max(p.Addresses, 1)))
	}
	if frac(mix(p.Seed+2, uint64(i))) < p.EgressFraction {
		flags |= FlagEgress
	}
	return flags, sendTo
}

// Encode returns the encoding of message i, padded to size bytes, with
// the id of its target address.
func (p Plan) Encode(dst []byte, i, size int) (msg []byte, target int) {
	flags, sendTo := p.Message(i)
	m := Msg{Flags: flags, Seq: uint64(i)}
	if flags&FlagSend != 0 {
		m.SendTo = ID(sendTo)
	}
	return m.Append(dst, size), p.Target(i)
}

// Expected returns, for messages [0, n) of the plan, the count each
// address must end with, the number of messages sent on, and the number
// of egress records.
func (p Plan) Expected(n int) (counts []int32, sends, egress int) {
	counts = make([]int32, max(p.Addresses, 1))
	for i := range n {
		counts[p.Target(i)]++
		flags, to := p.Message(i)
		if flags&FlagSend != 0 {
			counts[to]++
			sends++
		}
		if flags&FlagEgress != 0 {
			egress++
		}
	}
	return counts, sends, egress
}

// ID returns the id of address index k.
func ID(k int) string { return "a" + strconv.Itoa(k) }

// mix is splitmix64 of seed and x.
func mix(seed, x uint64) uint64 {
	z := seed + x*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// frac maps a hash to [0, 1).
func frac(h uint64) float64 { return float64(h>>11) / (1 << 53) }
