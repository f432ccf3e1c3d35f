package cluster

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/twinflow/twinflow/runtime/backoff"
)

// Changelogs and fencing
//
// Each key group has a changelog: the subject
// twinflow.cluster.<name>.changelog.<kg> of the cluster's R3 stream. It is a
// chain: every element names the sequence of the element before it, and is
// written with Nats-Expected-Last-Subject-Sequence set to that sequence, so
// JetStream stores it only if nothing else was written to the subject since.
// An element is either
//
//   - an epoch marker, written by a new owner after it read the changelog to
//     restore the key group: from then on, a write of any earlier owner
//     expects a sequence that is no longer the last, and JetStream refuses
//     it. This is the fence, and it is enforced by NATS at write time: an
//     owner paused past its lease, or cut off, cannot tell that it lost its
//     lease, and does not need to;
//   - a checkpoint record: the key group's writes in one checkpoint, one or
//     more messages (chunks of at most a NATS message each).
//
// A worker commits a checkpoint of all its key groups as one JetStream
// atomic batch (nats-server 2.12+): the records of every key group, the
// first message of each expecting its key group's last sequence. Either all
// are stored or none, and the batch is refused as a whole if any key group
// was fenced. Atomicity across key groups matters because key groups of one
// worker exchange messages in memory: a key group restored at checkpoint n
// next to one restored at n-1 would count some messages twice or never.
//
// A commit whose outcome is not known (a timeout while a stream leader is
// being elected, a lost connection) is resolved by reading the last element
// of a key group's changelog: the commit's own record (same holder, epoch
// and checkpoint), the element it expected (not stored: write again), or
// another owner's (fenced). Writes are never repeated blindly, so a record
// is never stored twice.

// Headers of changelog messages.
const (
	hdrKind       = "Twinflow-Kind"       // kindEpoch or kindCheckpoint
	hdrHolder     = "Twinflow-Holder"     // worker/incarnation of the writer
	hdrEpoch      = "Twinflow-Epoch"      // the writer's epoch
	hdrPrev       = "Twinflow-Prev"       // sequence of the previous element, on an element's first message
	hdrCheckpoint = "Twinflow-Checkpoint" // checkpoint id, on records
	hdrChunk      = "Twinflow-Chunk"      // "i/n", on records
)

const (
	kindEpoch      = "epoch"
	kindCheckpoint = "checkpoint"
)

// maxBatch is the number of messages JetStream takes in one atomic batch
// by default (nats-server's max_batch_size).
const maxBatch = 1000

// headerRoom is what a chunk leaves of the server's maximum payload for
// the headers.
const headerRoom = 4 << 10

// ErrFenced means that another owner took a key group over: it wrote to the
// key group's changelog after this owner's last write, so JetStream refused
// this owner's write. The key group is no longer this worker's: stop
// processing it and drop what it did since its last commit.
var ErrFenced = errors.New("fenced: another owner took the key group over and wrote to its changelog; its lease is lost")

// FencedError is ErrFenced with the key groups it applies to.
type FencedError struct {
	KeyGroups []int
	Epoch     uint64 // the epoch of this owner
	By        string // the holder that wrote, as far as known
	ByEpoch   uint64
}

func (e *FencedError) Error() string {
	by := ""
	if e.By != "" {
		by = fmt.Sprintf(" by %s at epoch %d", e.By, e.ByEpoch)
	}
	return fmt.Sprintf("cluster: key groups %v were taken over%s after epoch %d: %v", e.KeyGroups, by, e.Epoch, ErrFenced)
}

// Is makes errors.Is(err, ErrFenced) hold.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// ErrOutcomeUnknown means that a commit may or may not have been stored,
// and it could not be found out before the context ended. The key groups
// of the commit cannot be written again: restore them (a restore reads what
// was stored) or let them go.
var ErrOutcomeUnknown = errors.New("the outcome of the commit is unknown: restore its key groups before writing to them again")

// Owned is a key group that this worker incarnation owns: its lease and the
// last element of its changelog, which the next write expects. It is made
// by [Cluster.Restore]. Commits of one key group must not run concurrently.
type Owned struct {
	c       *Cluster
	lease   Lease
	subject string

	mu struct {
		sync.Mutex
		head    uint64 // sequence of the changelog's last element, written or read by this owner
		fenced  error  // set once a write was fenced
		unknown bool   // a commit's outcome is unknown
		// since the latest snapshot: bytes and records written or read
		sinceBytes    int64
		sinceRecords  int
		snapshotBytes int64 // of the latest snapshot
	}
}

// KeyGroup returns the key group.
func (o *Owned) KeyGroup() int { return o.lease.KeyGroup }

// Lease returns the lease it is owned through.
func (o *Owned) Lease() Lease { return o.lease }

// Epoch returns the owner's epoch.
func (o *Owned) Epoch() uint64 { return o.lease.Epoch() }

// Head returns the sequence of the last element of the key group's
// changelog, as far as this owner knows.
func (o *Owned) Head() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.head
}

// usable returns why the key group cannot be written, nil when it can.
func (o *Owned) usable() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.mu.fenced != nil:
		return o.mu.fenced
	case o.mu.unknown:
		return fmt.Errorf("cluster %s: key group %d: %w", o.c.cfg.Name, o.lease.KeyGroup, ErrOutcomeUnknown)
	}
	return nil
}

// Part is one key group's share of a checkpoint.
type Part struct {
	Owned *Owned
	// Changes are the key group's writes since its last commit, in any
	// order: each key with its value, or a nil value for a delete (see
	// state.Overlay.KeyGroup). Every key must be a key of the key group.
	Changes iter.Seq2[[]byte, []byte]
	// Messages are what the key group sends to other key groups with this
	// checkpoint: each is stored exactly when the checkpoint is, on the
	// receiving key group's subject (see [Cluster.MessageSubject]).
	Messages []Message
}

// Message is a message of a key group to another, sent with a checkpoint.
type Message struct {
	To     int // receiving key group
	Header nats.Header
	Data   []byte
}

// CommitStats describes what a commit wrote.
type CommitStats struct {
	Messages int   // NATS messages in the atomic batch
	Bytes    int64 // their payload bytes
	Entries  int   // keys set or deleted
}

// Commit stores checkpoint id's changes of the parts' key groups as one
// atomic batch, fenced: if another owner wrote to any of the key groups'
// changelogs since this owner's last write, nothing is stored and the error
// is a *FencedError. It retries what can be retried (a stream leader being
// elected, a lost connection) until ctx ends, and then returns an error
// wrapping ErrOutcomeUnknown if the commit may have been stored.
//
// An error other than ErrFenced and ErrOutcomeUnknown means that nothing
// was stored and the parts' key groups can be committed again.
func (c *Cluster) Commit(ctx context.Context, id uint64, parts []Part) (CommitStats, error) {
	var st CommitStats
	if len(parts) == 0 {
		return st, nil
	}
	seen := make(map[int]bool, len(parts))
	for _, p := range parts {
		o := p.Owned
		if o == nil || o.c != c {
			return st, fmt.Errorf("cluster %s: commit %d: a part's key group is not owned through this cluster", c.cfg.Name, id)
		}
		if seen[o.KeyGroup()] {
			return st, fmt.Errorf("cluster %s: commit %d: key group %d appears twice", c.cfg.Name, id, o.KeyGroup())
		}
		seen[o.KeyGroup()] = true
		if err := o.usable(); err != nil {
			return st, err
		}
	}
	chunkSize := int(c.js.Conn().MaxPayload()) - headerRoom
	var msgs []*nats.Msg
	first := make([]int, len(parts)) // index in msgs of each part's first message
	last := make([]int, len(parts))  // and of its record's last
	heads := make([]uint64, len(parts))
	sizes := make([]int64, len(parts))
	for i, p := range parts {
		data, entries, err := encodeRecord(p.Owned.KeyGroup(), p.Changes)
		if err != nil {
			return st, fmt.Errorf("cluster %s: commit %d: %w", c.cfg.Name, id, err)
		}
		st.Entries += entries
		st.Bytes += int64(len(data))
		sizes[i] = int64(len(data))
		first[i] = len(msgs)
		heads[i] = p.Owned.Head()
		pieces := chunks(data, chunkSize)
		for j, piece := range pieces {
			m := p.Owned.message(kindCheckpoint, piece)
			m.Header.Set(hdrCheckpoint, strconv.FormatUint(id, 10))
			m.Header.Set(hdrChunk, strconv.Itoa(j+1)+"/"+strconv.Itoa(len(pieces)))
			if j == 0 {
				m.Header.Set(hdrPrev, strconv.FormatUint(heads[i], 10))
			}
			msgs = append(msgs, m)
		}
		last[i] = len(msgs) - 1
		for _, sent := range p.Messages {
			if err := c.checkKeyGroup(sent.To); err != nil {
				return st, fmt.Errorf("cluster %s: commit %d: a message of key group %d: %w", c.cfg.Name, id, p.Owned.KeyGroup(), err)
			}
			m := nats.NewMsg(c.MessageSubject(sent.To))
			m.Data = sent.Data
			for k, v := range sent.Header {
				m.Header[k] = v
			}
			st.Bytes += int64(len(sent.Data))
			msgs = append(msgs, m)
		}
	}
	st.Messages = len(msgs)
	if len(msgs) > maxBatch {
		return st, fmt.Errorf("cluster %s: checkpoint %d needs %d messages of up to %d bytes, more than the %d of one atomic batch: "+
			"checkpoint more often, or raise the servers' max_batch_size and max_payload", c.cfg.Name, id, len(msgs), chunkSize, maxBatch)
	}

	r := backoff.Retrier{Policy: retryPolicy}
	var lastErr error
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			if attempt == 0 {
				return st, fmt.Errorf("cluster %s: commit %d: %w", c.cfg.Name, id, ctx.Err())
			}
			break
		}
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		seq, err := c.publishBatch(actx, msgs, first, heads)
		cancel()
		if err == nil {
			c.committed(parts, msgs, last, seq, sizes)
			return st, nil
		}
		lastErr = err
		if permanentBatchError(err) {
			return st, fmt.Errorf("cluster %s: commit %d: %w", c.cfg.Name, id, err)
		}
		// Stored, refused, or neither? Ask the key groups' changelogs.
		outcome, rerr := c.resolve(ctx, id, parts, heads)
		switch {
		case rerr != nil:
			lastErr = fmt.Errorf("%w (and then, finding out whether it was stored: %v)", err, rerr)
		case outcome.fenced != nil:
			for _, kg := range outcome.fenced.KeyGroups {
				for _, p := range parts {
					if p.Owned.KeyGroup() == kg {
						p.Owned.fence(outcome.fenced)
					}
				}
			}
			return st, outcome.fenced
		case outcome.stored:
			c.committedAt(parts, outcome.lasts, sizes)
			return st, nil
		}
		// Not stored: a transient failure, or JetStream refusing a
		// compare-and-set while another write of the subject was in
		// flight. Write again.
		select {
		case <-ctx.Done():
		case <-time.After(r.Next()):
		}
	}
	// An attempt that timed out may still be stored later.
	for _, p := range parts {
		p.Owned.mu.Lock()
		p.Owned.mu.unknown = true
		p.Owned.mu.Unlock()
	}
	return st, fmt.Errorf("cluster %s: commit %d: %w: %v", c.cfg.Name, id, ErrOutcomeUnknown, lastErr)
}

// message returns a changelog message of this owner.
func (o *Owned) message(kind string, data []byte) *nats.Msg {
	m := nats.NewMsg(o.subject)
	m.Data = data
	m.Header.Set(hdrKind, kind)
	m.Header.Set(hdrHolder, o.lease.Holder.String())
	m.Header.Set(hdrEpoch, strconv.FormatUint(o.lease.Epoch(), 10))
	return m
}

// publishBatch publishes msgs as one atomic batch, the first message of
// each part expecting its key group's head, and returns the sequence of the
// last message.
func (c *Cluster) publishBatch(ctx context.Context, msgs []*nats.Msg, first []int, heads []uint64) (uint64, error) {
	b, err := jetstreamext.NewBatchPublisher(c.js, jetstreamext.BatchFlowControl{AckFirst: true, AckTimeout: requestTimeout})
	if err != nil {
		return 0, err
	}
	expect := make(map[int]uint64, len(first))
	for i, f := range first {
		expect[f] = heads[i]
	}
	for i, m := range msgs {
		var opts []jetstreamext.BatchMsgOpt
		if h, ok := expect[i]; ok {
			opts = append(opts, jetstreamext.WithBatchExpectLastSequencePerSubject(h))
		}
		// The headers of a message are set afresh on every attempt.
		m.Header.Del(jetstreamext.BatchIDHeader)
		m.Header.Del(jetstreamext.BatchSeqHeader)
		m.Header.Del(jetstreamext.BatchCommitHeader)
		m.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
		if i < len(msgs)-1 {
			if err := b.AddMsg(m, opts...); err != nil {
				_ = b.Discard()
				return 0, err
			}
			continue
		}
		ack, err := b.CommitMsg(ctx, m, opts...)
		if err != nil {
			return 0, err
		}
		return ack.Sequence, nil
	}
	return 0, errors.New("empty batch")
}

// permanentBatchError reports whether err says that the batch can never be
// stored as it is.
func permanentBatchError(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jetstreamext.JSErrCodeBatchPublishNotEnabled, jetstreamext.JSErrCodeBatchPublishExceedsLimit,
		jetstreamext.JSErrCodeBatchPublishUnsupportedHeader, jetstreamext.JSErrCodeBatchPublishInvalidID:
		return true
	}
	return false
}

// committed advances the parts' heads after a batch whose last message is
// at seq: the batch's messages have consecutive sequences, and last holds
// the index of each part's last record message.
func (c *Cluster) committed(parts []Part, msgs []*nats.Msg, last []int, seq uint64, sizes []int64) {
	base := seq - uint64(len(msgs)) + 1
	lasts := make([]uint64, len(parts))
	for i := range parts {
		lasts[i] = base + uint64(last[i])
	}
	c.committedAt(parts, lasts, sizes)
}

func (c *Cluster) committedAt(parts []Part, lasts []uint64, sizes []int64) {
	for i, p := range parts {
		o := p.Owned
		o.mu.Lock()
		o.mu.head = lasts[i]
		o.mu.sinceRecords++
		o.mu.sinceBytes += sizes[i]
		o.mu.Unlock()
	}
}

func (o *Owned) fence(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.fenced == nil {
		o.mu.fenced = err
	}
}

// outcome is what the changelogs say of a commit whose outcome was unknown.
type outcome struct {
	stored bool
	lasts  []uint64 // when stored: the last sequence of each part
	fenced *FencedError
}

// resolve reads the last element of each part's changelog to find out
// whether commit id was stored, not stored, or fenced.
func (c *Cluster) resolve(ctx context.Context, id uint64, parts []Part, heads []uint64) (outcome, error) {
	var out outcome
	stored, notStored := 0, 0
	lasts := make([]uint64, len(parts))
	for i, p := range parts {
		o := p.Owned
		last, err := c.lastElement(ctx, o.subject)
		if err != nil {
			return out, err
		}
		lasts[i] = last.seq
		switch {
		case last.seq == heads[i]:
			notStored++
		case last.holder == o.lease.Holder.String() && last.epoch == o.Epoch() && last.checkpoint == id:
			stored++
		case last.seq < heads[i]:
			return out, fmt.Errorf("key group %d: the changelog ends at %d, before this owner's last write at %d: "+
				"the stream %s was deleted or purged", o.KeyGroup(), last.seq, heads[i], c.changelogStream())
		default:
			if out.fenced == nil {
				out.fenced = &FencedError{Epoch: o.Epoch(), By: last.holder, ByEpoch: last.epoch}
			}
			out.fenced.KeyGroups = append(out.fenced.KeyGroups, o.KeyGroup())
		}
	}
	switch {
	case out.fenced != nil:
		slices.Sort(out.fenced.KeyGroups)
	case stored == len(parts):
		out.stored, out.lasts = true, lasts
	case stored > 0 && notStored > 0:
		return out, fmt.Errorf("checkpoint %d is stored for %d of its %d key groups: an atomic batch was split", id, stored, len(parts))
	}
	return out, nil
}

// element describes the last message of a changelog.
type element struct {
	seq        uint64
	kind       string
	holder     string
	epoch      uint64
	checkpoint uint64
}

// lastElement reads the last message of a changelog subject, from the
// stream's leader; seq is 0 when there is none.
func (c *Cluster) lastElement(ctx context.Context, subject string) (element, error) {
	var m *jetstream.RawStreamMsg
	err := retry(ctx, func(ctx context.Context) (err error) {
		m, err = c.log.GetLastMsgForSubject(ctx, subject)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return element{}, nil
	}
	if err != nil {
		return element{}, fmt.Errorf("read the last element of %s: %w", subject, err)
	}
	e, err := parseElement(m.Sequence, m.Header)
	if err != nil {
		return element{}, fmt.Errorf("%s: %w", subject, err)
	}
	return e, nil
}

// parseElement reads the headers common to every changelog message.
func parseElement(seq uint64, h nats.Header) (element, error) {
	e := element{seq: seq, kind: h.Get(hdrKind), holder: h.Get(hdrHolder)}
	var err error
	if e.epoch, err = strconv.ParseUint(h.Get(hdrEpoch), 10, 64); err != nil || e.holder == "" ||
		(e.kind != kindEpoch && e.kind != kindCheckpoint) {
		return element{}, fmt.Errorf("message %d is not a changelog element (kind %q, holder %q, epoch %q)",
			seq, e.kind, e.holder, h.Get(hdrEpoch))
	}
	if e.kind == kindCheckpoint {
		if e.checkpoint, err = strconv.ParseUint(h.Get(hdrCheckpoint), 10, 64); err != nil {
			return element{}, fmt.Errorf("message %d: checkpoint %q: %w", seq, h.Get(hdrCheckpoint), err)
		}
	}
	return e, nil
}
