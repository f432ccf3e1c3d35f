package runtime

// Messages between workers in cluster mode. A checkpoint carries, in its
// atomic batch, one message per receiving key group owned elsewhere
// (clusterMode.outgoing): a batch from each sending key group, numbered per
// (sender, receiver) in the sender's range, so that a new owner of the
// sender continues the numbering. The receiving worker reads them like an
// ingress (remoteReader), drops a batch at or below the high-water mark it
// keeps per sender in the receiver's range, and commits the marks with the
// effects: delivery is exactly once whatever NATS remembers of message ids.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

// remoteReaderName names the reader of messages between workers in
// checkpoints and key groups' positions.
const remoteReaderName = "cluster-messages"

// messageBatch is one sending key group's messages in a message to a
// receiving key group.
type messageBatch struct {
	From    int
	Seq     uint64
	Pending []*storagev1.Pending
}

// encodeMessageBatches writes batches as [from uvarint][seq uvarint]
// [len uvarint][storagev1.Mailbox] each.
func encodeMessageBatches(batches []messageBatch) ([]byte, error) {
	var out []byte
	for _, b := range batches {
		data, err := proto.Marshal(&storagev1.Mailbox{Pending: b.Pending})
		if err != nil {
			return nil, fmt.Errorf("encoding messages of key group %d: %w", b.From, err)
		}
		out = binary.AppendUvarint(out, uint64(b.From))
		out = binary.AppendUvarint(out, b.Seq)
		out = binary.AppendUvarint(out, uint64(len(data)))
		out = append(out, data...)
	}
	return out, nil
}

var errMalformedMessages = errors.New("malformed message between workers")

// decodeMessageBatches reads what encodeMessageBatches wrote.
func decodeMessageBatches(data []byte) ([]messageBatch, error) {
	var out []messageBatch
	for len(data) > 0 {
		from, n1 := binary.Uvarint(data)
		if n1 <= 0 {
			return nil, errMalformedMessages
		}
		seq, n2 := binary.Uvarint(data[n1:])
		if n2 <= 0 {
			return nil, errMalformedMessages
		}
		size, n3 := binary.Uvarint(data[n1+n2:])
		rest := data[n1+n2+n3:]
		if n3 <= 0 || size > uint64(len(rest)) {
			return nil, errMalformedMessages
		}
		var mb storagev1.Mailbox
		if err := proto.Unmarshal(rest[:size], &mb); err != nil {
			return nil, fmt.Errorf("%w: %v", errMalformedMessages, err)
		}
		out = append(out, messageBatch{From: int(from), Seq: seq, Pending: mb.GetPending()})
		data = rest[size:]
	}
	return out, nil
}

// remoteReader delivers the messages from other workers to the owned key
// groups' shards, and emits checkpoint barriers in line with them.
type remoteReader struct {
	bus      *natsbus.Reader
	source   int
	k        int
	prefix   string     // of the subjects, before the receiving key group
	own      *ownership // its own view: it changes at the barriers that carry moves
	moveAt   func(id uint64) *move
	filter   []string // of the reader's subjects
	shards   ingress.Shards
	barriers ingress.Barriers
	mark     func(r, s int) uint64 // committed mark, for one not seen yet
	m        *clusterMetrics
	log      *slog.Logger

	barrier atomic.Uint64
	lastSeq uint64
	marks   map[[2]int]uint64 // by [receiver, sender]: highest batch delivered
	batches [][]shard.Item

	mu    sync.Mutex
	snaps map[uint64]map[[2]int]uint64 // marks at each barrier
}

// Name identifies the reader in checkpoints.
func (r *remoteReader) Name() string { return remoteReaderName }

// RequestBarrier asks for barrier id between two batches.
func (r *remoteReader) RequestBarrier(id uint64) { r.barrier.Store(id) }

// marksAt returns the marks as of barrier id, and forgets earlier ones.
func (r *remoteReader) marksAt(id uint64) map[[2]int]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.snaps[id]
	for k := range r.snaps {
		if k <= id {
			delete(r.snaps, k)
		}
	}
	return out
}

// Run reads until ctx ends.
func (r *remoteReader) Run(ctx context.Context) {
	for ctx.Err() == nil {
		r.emitBarrier()
		if r.anySaturated() {
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			continue
		}
		msgs, err := r.bus.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Error("reading messages from other workers failed; retrying", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		r.deliver(msgs)
	}
}

func (r *remoteReader) emitBarrier() {
	id := r.barrier.Swap(0)
	if id == 0 {
		return
	}
	r.mu.Lock()
	r.snaps[id] = maps.Clone(r.marks)
	r.mu.Unlock()
	for s := 0; s < r.shards.Count(); s++ {
		r.shards.Inbox(s).Push(shard.Item{Source: r.source, Barrier: id})
	}
	r.barriers.ReaderBarrier(id, remoteReaderName, r.lastSeq)
	if m := r.moveAt(id); m != nil {
		r.regroup(m)
	}
}

// regroup applies a move at its barrier: the key groups that joined are
// read from their committed positions, seeking back when they are behind,
// and their marks are read again from the store.
func (r *remoteReader) regroup(m *move) {
	from := r.own.apply(m, remoteReaderName, r.lastSeq)
	maps.DeleteFunc(r.marks, m.moved())
	if from < r.lastSeq {
		r.bus.Seek(from, r.filter)
		r.lastSeq = from
	}
}

func (r *remoteReader) anySaturated() bool {
	for s := 0; s < r.shards.Count(); s++ {
		if r.shards.Saturated(s) {
			return true
		}
	}
	return false
}

func (r *remoteReader) deliver(msgs []natsbus.Msg) {
	if len(msgs) == 0 {
		return
	}
	for i := range msgs {
		msg := &msgs[i]
		to, err := strconv.Atoi(strings.TrimPrefix(msg.Subject, r.prefix))
		if err != nil || to < 0 || to >= r.k {
			r.log.Error("message between workers on an unexpected subject dropped", "subject", msg.Subject, "seq", msg.Seq)
			continue
		}
		if !r.own.accepts(remoteReaderName, to, msg.Seq) {
			continue
		}
		batches, err := decodeMessageBatches(msg.Data)
		if err != nil {
			r.log.Error("message between workers dropped", "subject", msg.Subject, "seq", msg.Seq, "err", err)
			continue
		}
		for _, b := range batches {
			key := [2]int{to, b.From}
			mark, ok := r.marks[key]
			if !ok {
				mark = r.mark(to, b.From)
			}
			if b.Seq <= mark {
				r.marks[key] = mark
				r.m.duplicates.Inc()
				continue
			}
			r.marks[key] = b.Seq
			for _, p := range b.Pending {
				env := shard.EnvelopeOf(p)
				env.Published = msg.Time.UnixNano()
				s := r.shards.Locate(env.Target.ID)
				if kg := keygroup.Of(env.Target.ID, r.k); kg != to {
					r.log.Error("message between workers for another key group dropped", "key_group", to, "target", env.Target.String(), "target_key_group", kg)
					continue
				}
				r.batches[s] = append(r.batches[s], shard.Item{Source: r.source, Msg: env})
			}
			r.m.received.Add(float64(len(b.Pending)))
		}
	}
	for s, b := range r.batches {
		if len(b) > 0 {
			r.shards.Inbox(s).Push(b...)
			clear(b)
			r.batches[s] = b[:0]
		}
	}
	r.lastSeq = msgs[len(msgs)-1].Seq
}
