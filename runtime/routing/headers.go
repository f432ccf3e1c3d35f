// Package routing is cluster mode's routing stage: one router per cluster
// reads every ingress stream in order, routes its messages by the module's
// rules (runtime/ingress), and appends them, grouped by the key group of
// their target (keygroup.Of, the one hash), to the partitioned ingress
// stream (cluster.InStream), one subject per key group. Each worker reads
// only the subjects of its key groups (Decoder).
//
// The router is fenced without NATS's duplicate detection. It is the only
// writer of the subjects, and writes each expecting the subject's last
// sequence. Every message it writes carries its epoch, and per source
// stream how far the key group has been routed ("routed") and how far
// every key group has ("through"). A new router reads the last message of
// every subject, starts each stream after the highest "through", skips for
// each key group what its "routed" says it holds, and appends an epoch
// marker to every subject: the old router's next write is refused. See
// Takeover and Stage.
package routing

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Headers of the routed messages.
const (
	hdrKind    = "Twinflow-Kind"         // kindRouted or kindMarker
	hdrHolder  = "Twinflow-Router"       // worker/incarnation of the router
	hdrEpoch   = "Twinflow-Router-Epoch" // the router's epoch: key group 0's lease epoch
	hdrRouted  = "Twinflow-Routed"       // per stream: routed into this key group up to
	hdrThrough = "Twinflow-Through"      // per stream: routed into every key group up to
)

const (
	kindRouted = "routed"
	kindMarker = "marker"
)

// Positions are sequences of source streams, by stream name.
type Positions map[string]uint64

// Covers reports whether the message at seq of stream is at or below the
// position: already routed.
func (p Positions) Covers(stream string, seq uint64) bool { return seq <= p[stream] }

// raise sets each of o's positions in p where it is higher.
func (p Positions) raise(o Positions) {
	for s, seq := range o {
		if seq > p[s] {
			p[s] = seq
		}
	}
}

// String encodes the positions as "stream=seq" separated by spaces, in the
// order of the streams' names (stream names hold no spaces).
func (p Positions) String() string {
	var b strings.Builder
	for i, s := range slices.Sorted(maps.Keys(p)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
		b.WriteByte('=')
		b.WriteString(strconv.FormatUint(p[s], 10))
	}
	return b.String()
}

// parsePositions reads what String wrote.
func parsePositions(v string) (Positions, error) {
	p := Positions{}
	for _, f := range strings.Fields(v) {
		i := strings.LastIndexByte(f, '=')
		if i <= 0 {
			return nil, fmt.Errorf("position %q is not stream=sequence", f)
		}
		seq, err := strconv.ParseUint(f[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("position %q: %w", f, err)
		}
		p[f[:i]] = seq
	}
	return p, nil
}

// Head is what the headers of a routed message or marker say.
type Head struct {
	Kind    string
	Holder  string
	Epoch   uint64
	Routed  Positions
	Through Positions
}

// set writes h into a message's headers.
func (h Head) set(hdr nats.Header) {
	hdr.Set(hdrKind, h.Kind)
	hdr.Set(hdrHolder, h.Holder)
	hdr.Set(hdrEpoch, strconv.FormatUint(h.Epoch, 10))
	hdr.Set(hdrRouted, h.Routed.String())
	hdr.Set(hdrThrough, h.Through.String())
}

// ParseHead reads the headers of a message of the partitioned ingress.
func ParseHead(hdr nats.Header) (Head, error) {
	h := Head{Kind: hdr.Get(hdrKind), Holder: hdr.Get(hdrHolder)}
	if h.Kind != kindRouted && h.Kind != kindMarker {
		return Head{}, fmt.Errorf("kind %q: not a message of the routing stage", h.Kind)
	}
	var err error
	if h.Epoch, err = strconv.ParseUint(hdr.Get(hdrEpoch), 10, 64); err != nil {
		return Head{}, fmt.Errorf("epoch %q: %w", hdr.Get(hdrEpoch), err)
	}
	if h.Routed, err = parsePositions(hdr.Get(hdrRouted)); err != nil {
		return Head{}, fmt.Errorf("routed: %w", err)
	}
	if h.Through, err = parsePositions(hdr.Get(hdrThrough)); err != nil {
		return Head{}, fmt.Errorf("through: %w", err)
	}
	return h, nil
}

// Last is the last message of a key group's subject: its sequence (0 when
// the subject holds none) and what it says.
type Last struct {
	Seq  uint64
	Head Head
}

// Start is where a router continues after a takeover.
type Start struct {
	// From is, per source stream, the sequence after which the router
	// reads: every message up to it is routed into every key group.
	From Positions
	// Routed is, per key group, how far each stream was routed into it:
	// a message at or below is skipped for that key group.
	Routed []Positions
	// Heads are the sequences of the subjects' last messages, which the
	// router's next writes (the epoch markers) expect.
	Heads []uint64
}

// FencedError means that a router of a newer epoch took over.
type FencedError struct {
	Epoch    uint64 // this router's
	ByEpoch  uint64
	By       string
	KeyGroup int
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("routing: router of epoch %d fenced: key group %d's ingress was written by router %s of epoch %d",
		e.Epoch, e.KeyGroup, e.By, e.ByEpoch)
}

// Takeover computes where a router of epoch starts from the last message
// of every key group's subject (lasts[kg]). A subject written by a newer
// router is a *FencedError: this router is not the cluster's.
func Takeover(epoch uint64, lasts []Last) (Start, error) {
	st := Start{From: Positions{}, Routed: make([]Positions, len(lasts)), Heads: make([]uint64, len(lasts))}
	for kg, l := range lasts {
		st.Heads[kg] = l.Seq
		st.Routed[kg] = Positions{}
		if l.Seq == 0 {
			continue
		}
		if l.Head.Epoch > epoch {
			return Start{}, &FencedError{Epoch: epoch, ByEpoch: l.Head.Epoch, By: l.Head.Holder, KeyGroup: kg}
		}
		st.Routed[kg].raise(l.Head.Routed)
		st.From.raise(l.Head.Through)
	}
	return st, nil
}

// Refused is what a router does after a write to a key group's subject
// failed, given the subject's last message and the head the write
// expected.
type Refused int

const (
	// Retry: the write was not stored; write it again.
	Retry Refused = iota
	// Adopt: the subject moved on by this router's own writes (a write
	// whose answer was lost): take its head and routed positions, and
	// write again what it does not hold.
	Adopt
	// Stop: a newer router wrote; this one stops.
	Stop
)

// OnRefused decides what a router of epoch does after a write to a subject
// whose head it knew as head failed, the subject's last message being
// last.
func OnRefused(epoch, head uint64, last Last) (Refused, error) {
	switch {
	case last.Seq == head:
		return Retry, nil
	case last.Seq != 0 && last.Head.Epoch > epoch:
		return Stop, nil
	case last.Seq > head && last.Head.Epoch == epoch:
		return Adopt, nil
	}
	return Retry, fmt.Errorf("routing: the subject's last message is %d (epoch %d), but this router of epoch %d wrote up to %d: "+
		"the partitioned ingress was purged or written by another router", last.Seq, last.Head.Epoch, epoch, head)
}
