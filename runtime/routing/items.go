package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

// encodeItems writes routed envelopes as [n uvarint], n times [published
// uvarint][len uvarint][idempotency key], then a storagev1.Mailbox of the n
// messages (target, typename, payload, reply-to).
func encodeItems(envs []shard.Envelope) ([]byte, error) {
	data, err := proto.Marshal(&storagev1.Mailbox{Pending: shard.Pendings(envs)})
	if err != nil {
		return nil, fmt.Errorf("routing: encoding %d messages: %w", len(envs), err)
	}
	out := binary.AppendUvarint(nil, uint64(len(envs)))
	for i := range envs {
		out = binary.AppendUvarint(out, uint64(max(0, envs[i].Published)))
		out = binary.AppendUvarint(out, uint64(len(envs[i].Key)))
		out = append(out, envs[i].Key...)
	}
	return append(out, data...), nil
}

var errMalformed = errors.New("malformed message of the partitioned ingress")

// decodeItems reads what encodeItems wrote.
func decodeItems(data []byte) ([]shard.Envelope, error) {
	n, w := binary.Uvarint(data)
	if w <= 0 || n > uint64(len(data)) {
		return nil, errMalformed
	}
	data = data[w:]
	envs := make([]shard.Envelope, n)
	for i := range envs {
		pub, w1 := binary.Uvarint(data)
		if w1 <= 0 {
			return nil, errMalformed
		}
		size, w2 := binary.Uvarint(data[w1:])
		if w2 <= 0 || size > uint64(len(data)-w1-w2) {
			return nil, errMalformed
		}
		envs[i].Published = int64(pub)
		envs[i].Key = string(data[w1+w2 : w1+w2+int(size)])
		data = data[w1+w2+int(size):]
	}
	var mb storagev1.Mailbox
	if err := proto.Unmarshal(data, &mb); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if len(mb.GetPending()) != len(envs) {
		return nil, fmt.Errorf("%w: %d messages and %d keys", errMalformed, len(mb.GetPending()), len(envs))
	}
	for i, p := range mb.GetPending() {
		e := shard.EnvelopeOf(p)
		e.Published, e.Key = envs[i].Published, envs[i].Key
		envs[i] = e
	}
	return envs, nil
}

// Decoder is a worker's decoder of the partitioned ingress (an
// ingress.Decoder): it delivers the routed messages of a key group that
// Accept takes, skips epoch markers, and remembers the last message of
// each key group's subject it read, as of each barrier, for the trimming.
type Decoder struct {
	K      int
	Prefix string // of the subjects, before the key group
	// Accept says whether the message at seq of key group kg is to be
	// processed here: kg is owned and had not read it.
	Accept func(kg int, seq uint64) bool
	Log    *slog.Logger

	last    map[int]uint64 // by key group: sequence of the last message read
	bad     int            // malformed messages since the last log line
	badLast string
	logged  time.Time

	mu    sync.Mutex
	snaps map[uint64]map[int]uint64 // last at each barrier
}

// Decode implements ingress.Decoder.
func (d *Decoder) Decode(msg *natsbus.Msg, push func(shard.Envelope), _ *ingress.Faults) int {
	kg, err := strconv.Atoi(strings.TrimPrefix(msg.Subject, d.Prefix))
	if err != nil || kg < 0 || kg >= d.K {
		d.malformed(fmt.Sprintf("message %d on unexpected subject %s", msg.Seq, msg.Subject))
		return 0
	}
	if d.last == nil {
		d.last = map[int]uint64{}
	}
	d.last[kg] = msg.Seq
	if !d.Accept(kg, msg.Seq) || msg.Header.Get(hdrKind) == kindMarker {
		return 0
	}
	envs, err := decodeItems(msg.Data)
	if err != nil {
		d.malformed(fmt.Sprintf("message %d of key group %d: %v", msg.Seq, kg, err))
		return 0
	}
	for _, env := range envs {
		if got := keygroup.Of(env.Target.ID, d.K); got != kg {
			d.malformed(fmt.Sprintf("message %d of key group %d holds a message to %s of key group %d", msg.Seq, kg, env.Target, got))
			continue
		}
		push(env)
	}
	return len(envs)
}

// malformed counts a message that cannot be delivered: only a router of
// another build writes one. It is logged at most every 5 s.
func (d *Decoder) malformed(what string) {
	d.bad++
	d.badLast = what
	if time.Since(d.logged) < 5*time.Second {
		return
	}
	d.Log.Error("malformed messages of the partitioned ingress dropped", "count", d.bad, "last", d.badLast)
	d.bad, d.logged = 0, time.Now()
}

// Barrier records where each key group's subject was read as of barrier
// id; the reader calls it when it emits the barrier.
func (d *Decoder) Barrier(id uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.snaps == nil {
		d.snaps = map[uint64]map[int]uint64{}
	}
	d.snaps[id] = maps.Clone(d.last)
}

// ReadAt returns, for each key group read from, the sequence of the last
// message of its subject read before barrier id, and forgets earlier
// barriers.
func (d *Decoder) ReadAt(id uint64) map[int]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.snaps[id]
	for k := range d.snaps {
		if k <= id {
			delete(d.snaps, k)
		}
	}
	return out
}

// Filter returns the subjects of the partitioned ingress a worker that owns
// the key groups kgs (in order, without repeats) reads: one per key group,
// or the wildcard when it owns all of them.
func Filter(c *cluster.Cluster, kgs []int) []string {
	if len(kgs) == c.KeyGroups() {
		return []string{c.InSubject(-1)}
	}
	out := make([]string, len(kgs))
	for i, kg := range kgs {
		out[i] = c.InSubject(kg)
	}
	return out
}
