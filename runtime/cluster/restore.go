package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
	"github.com/twinflow/twinflow/runtime/state"
)

// Restoring a key group
//
// A new owner rebuilds the key group in its store from a base and the
// changelog after it, then appends its epoch marker, which fences every
// earlier owner:
//
//  1. The base is the store itself when it holds the key group at a
//     position no older than the latest snapshot (a worker getting back a
//     key group it had: only the changes since are read), and otherwise the
//     latest snapshot, loaded into the cleared key group (or nothing, for a
//     key group never snapshotted).
//  2. Then every element after the base, checking the chain: each element
//     names the one before it, so a purge by a newer snapshot or a stream
//     that was replaced shows as a gap, and the restore starts over from
//     the newest snapshot.
//  3. Then the marker, expecting the last element read. If it is refused,
//     the old owner wrote once more meanwhile (it does not know yet): read
//     that too and try again. If an element of a newer epoch shows up,
//     another worker took the key group over meanwhile: the restore fails
//     with ErrFenced.
//
// The store records the marker's position with the data in one synced
// write; a restore cut short leaves the key group without a position, so
// the next one starts from a snapshot.

// RestoreStats describes what a restore read.
type RestoreStats struct {
	FromStore       bool   // the base was the store's own copy
	FromSnapshot    bool   // the base was a snapshot
	Base            uint64 // the changelog element the base is a copy of
	SnapshotEntries int
	SnapshotBytes   int64
	Records         int   // checkpoint records read after the base
	RecordEntries   int   // keys they set or delete
	RecordBytes     int64 // their payload
	Attempts        int   // starts, more than one when the changelog was compacted meanwhile
}

// errGap means that the changelog after a base is not whole: it was
// compacted meanwhile, or the base is not on the chain.
var errGap = errors.New("the changelog after the base is not whole")

// errSnapshotRead is a snapshot that could not be read whole, or read as
// it was written: a read while the object store's stream changes leader
// may return a short or wrong object (its digest, checked at its end,
// then fails). The restore starts again, after a pause.
var errSnapshotRead = errors.New("the snapshot could not be read as written")

// maxRestoreAttempts bounds the restarts of a restore after gaps.
const maxRestoreAttempts = 5

// Restore makes this worker the owner of the leased key group: it rebuilds
// the key group's data in store from the cluster (see above), fences every
// earlier owner, and returns the key group ready for commits.
func (c *Cluster) Restore(ctx context.Context, lease Lease, store *state.Store) (*Owned, RestoreStats, error) {
	var st RestoreStats
	kg := lease.KeyGroup
	if err := c.checkKeyGroup(kg); err != nil {
		return nil, st, err
	}
	if lease.Holder.IsZero() || lease.Revision == 0 {
		return nil, st, fmt.Errorf("cluster %s: restore key group %d without a lease", c.cfg.Name, kg)
	}
	if store.KeyGroups() != c.k {
		return nil, st, fmt.Errorf("cluster %s has %d key groups but the store has %d", c.cfg.Name, c.k, store.KeyGroups())
	}
	o := &Owned{c: c, lease: lease, subject: c.changelogSubject(kg)}
	useStore := true
	var err error
	pause := backoff.Retrier{Policy: retryPolicy}
	for st.Attempts < maxRestoreAttempts {
		st.Attempts++
		err = c.restoreOnce(ctx, o, store, useStore, &st)
		if err == nil {
			return o, st, nil
		}
		switch {
		case errors.Is(err, errSnapshotRead):
			select {
			case <-time.After(pause.Next()):
			case <-ctx.Done():
				return nil, st, errors.Join(err, ctx.Err())
			}
		case !errors.Is(err, errGap):
			return nil, st, fmt.Errorf("cluster %s: restore key group %d: %w", c.cfg.Name, kg, err)
		}
		useStore = false
	}
	return nil, st, fmt.Errorf("cluster %s: restore key group %d: %d attempts, each from the latest snapshot, found the changelog "+
		"broken (compacted under each, or the stream was replaced) or could not read the snapshot: %w", c.cfg.Name, kg, maxRestoreAttempts, err)
}

// restoreOnce is one attempt of Restore.
func (c *Cluster) restoreOnce(ctx context.Context, o *Owned, store *state.Store, useStore bool, st *RestoreStats) error {
	kg := o.KeyGroup()
	snap, _, err := c.snapshotPointer(ctx, kg)
	if err != nil {
		return err
	}
	pos, ok, err := store.Position(kg)
	if err != nil {
		return err
	}
	st.FromStore, st.FromSnapshot, st.SnapshotEntries, st.SnapshotBytes = false, false, 0, 0
	st.Records, st.RecordEntries, st.RecordBytes = 0, 0, 0
	var l *state.Loader
	var base state.Position
	if useStore && ok && pos.Seq >= snap.Seq {
		l = store.LoadKeyGroup(kg, false)
		base = pos
		st.FromStore = true
	} else {
		l = store.LoadKeyGroup(kg, true)
		if snap.Object != "" {
			if err := c.loadSnapshot(ctx, snap, l, st); err != nil {
				l.Abort()
				return err
			}
			base = state.Position{Seq: snap.Seq, Epoch: snap.Epoch}
			st.FromSnapshot = true
		}
	}
	st.Base = base.Seq
	head, err := c.catchUp(ctx, o, l, base, st)
	if err != nil {
		l.Abort()
		return err
	}
	o.mu.head = head
	o.mu.sinceBytes, o.mu.sinceRecords = st.RecordBytes, st.Records
	o.mu.snapshotBytes = snap.Bytes
	return l.Finish(state.Position{Seq: head, Epoch: o.Epoch()})
}

// loadSnapshot loads a snapshot object into l.
func (c *Cluster) loadSnapshot(ctx context.Context, snap SnapshotInfo, l *state.Loader, st *RestoreStats) error {
	// The object's reader lives on the context Get is given, so only the
	// look-up is retried with short attempts.
	err := retry(ctx, func(ctx context.Context) error {
		_, err := c.snap.GetInfo(ctx, snap.Object)
		return err
	})
	var r jetstream.ObjectResult
	if err == nil {
		r, err = c.snap.Get(ctx, snap.Object)
	}
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: snapshot %s was replaced meanwhile", errGap, snap.Object)
	}
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", snap.Object, err)
	}
	defer r.Close()
	n, err := decodeRecord(r, snap.KeyGroup, l.Set)
	if err == nil {
		// The digest is checked when the reader reaches the object's end.
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		return fmt.Errorf("%w: snapshot %s: %w", errSnapshotRead, snap.Object, err)
	}
	if n != snap.Entries {
		return fmt.Errorf("snapshot %s holds %d entries, its pointer says %d", snap.Object, n, snap.Entries)
	}
	st.SnapshotEntries, st.SnapshotBytes = n, snap.Bytes
	return nil
}

// catchUp applies the changelog elements after base to l and appends the
// owner's epoch marker after the last of them; it returns the marker's
// sequence.
func (c *Cluster) catchUp(ctx context.Context, o *Owned, l *state.Loader, base state.Position, st *RestoreStats) (uint64, error) {
	at := base
	r := backoff.Retrier{Policy: retryPolicy}
	for {
		last, err := c.lastElement(ctx, o.subject)
		if err != nil {
			return 0, err
		}
		switch {
		case last.seq < at.Seq:
			return 0, fmt.Errorf("%w: the changelog ends at %d, before the base at %d", errGap, last.seq, at.Seq)
		case last.seq == at.Seq && at.Seq != 0 && last.epoch != at.Epoch:
			return 0, fmt.Errorf("%w: element %d has epoch %d, the base says %d", errGap, at.Seq, last.epoch, at.Epoch)
		case last.seq > at.Seq:
			if at, err = c.readElements(ctx, o, l, at, last.seq, st); err != nil {
				return 0, err
			}
		}
		seq, err := c.appendMarker(ctx, o, at.Seq)
		switch {
		case err == nil:
			return seq, nil
		case errors.Is(err, errMoved):
			r.Reset() // read what was written, then try again
		default:
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("append the epoch marker: %w", err)
			case <-time.After(r.Next()):
			}
		}
	}
}

// errMoved means that the changelog moved past the element a write
// expected.
var errMoved = errors.New("the changelog moved on")

// appendMarker appends o's epoch marker after the element at prev.
func (c *Cluster) appendMarker(ctx context.Context, o *Owned, prev uint64) (uint64, error) {
	m := o.message(kindEpoch, nil)
	m.Header.Set(hdrPrev, strconv.FormatUint(prev, 10))
	actx, cancel := context.WithTimeout(ctx, requestTimeout)
	ack, err := c.js.PublishMsg(actx, m, jetstream.WithExpectLastSequencePerSubject(prev))
	cancel()
	if err == nil {
		return ack.Sequence, nil
	}
	// Was it stored after all (a reply lost), refused, or neither?
	last, lerr := c.lastElement(ctx, o.subject)
	switch {
	case lerr != nil:
		return 0, err
	case last.kind == kindEpoch && last.holder == o.lease.Holder.String() && last.epoch == o.Epoch():
		return last.seq, nil
	case last.seq != prev:
		return 0, errMoved
	}
	return 0, err
}

// readElements applies the elements of the changelog in (at, to] to l and
// returns the position of the last one.
func (c *Cluster) readElements(ctx context.Context, o *Owned, l *state.Loader, at state.Position, to uint64, st *RestoreStats) (state.Position, error) {
	// An ephemeral consumer of the key group's subject, from the element
	// after at. The chain check below finds any gap, so it needs none of an
	// ordered consumer's checks (whose resets cost a consumer each time).
	var cons jetstream.Consumer
	err := retry(ctx, func(ctx context.Context) (err error) {
		cons, err = c.log.CreateConsumer(ctx, jetstream.ConsumerConfig{
			FilterSubject:     o.subject,
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       at.Seq + 1,
			AckPolicy:         jetstream.AckNonePolicy,
			MemoryStorage:     true,
			Replicas:          1,
			InactiveThreshold: time.Minute,
		})
		return err
	})
	if err != nil {
		return at, fmt.Errorf("read the changelog: %w", err)
	}
	defer func() {
		// Not waited for: the consumer also goes by itself once inactive.
		go func(name string) {
			dctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			_ = c.log.DeleteConsumer(dctx, name)
		}(cons.CachedInfo().Name)
	}()
	// Fetches that do not wait, repeated while the consumer has nothing
	// yet: in a cluster, a consumer just created may not serve pulls for a
	// moment (they get no responders), and a pull that waited would be
	// retried only after missing heartbeats.
	var batch []jetstream.Msg
	next := func() (jetstream.Msg, error) {
		r := backoff.Retrier{Policy: backoff.Policy{Base: 5 * time.Millisecond, Max: 100 * time.Millisecond}}
		for len(batch) == 0 {
			b, err := cons.FetchNoWait(256)
			if err == nil {
				for m := range b.Messages() {
					batch = append(batch, m)
				}
				err = b.Error()
			}
			if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !natserr.Transient(err) {
				return nil, err
			}
			if len(batch) == 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(r.Next()):
				}
			}
		}
		m := batch[0]
		batch = batch[1:]
		return m, nil
	}

	var rec *pendingRecord // chunks of a record being read
	for at.Seq < to {
		m, err := next()
		if err != nil {
			return at, fmt.Errorf("read the changelog after %d: %w", at.Seq, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return at, err
		}
		seq := meta.Sequence.Stream
		e, err := parseElement(seq, m.Headers())
		if err != nil {
			return at, err
		}
		if e.epoch > o.Epoch() {
			return at, &FencedError{KeyGroups: []int{o.KeyGroup()}, Epoch: o.Epoch(), By: e.holder, ByEpoch: e.epoch}
		}
		if e.epoch < at.Epoch {
			return at, fmt.Errorf("changelog element %d has epoch %d, older than the element before it (%d)", seq, e.epoch, at.Epoch)
		}
		if rec == nil {
			// The first message of an element names the one before.
			prev, perr := strconv.ParseUint(m.Headers().Get(hdrPrev), 10, 64)
			if perr != nil || prev != at.Seq {
				return at, fmt.Errorf("%w: element %d follows %q, not %d", errGap, seq, m.Headers().Get(hdrPrev), at.Seq)
			}
		}
		if e.kind == kindEpoch {
			if rec != nil {
				return at, fmt.Errorf("changelog element %d: an epoch marker inside record %d", seq, rec.checkpoint)
			}
			at = state.Position{Seq: seq, Epoch: e.epoch}
			continue
		}
		i, n, err := parseChunk(m.Headers().Get(hdrChunk))
		if err != nil {
			return at, fmt.Errorf("changelog message %d: %w", seq, err)
		}
		if rec == nil {
			rec = &pendingRecord{checkpoint: e.checkpoint, epoch: e.epoch, chunks: n}
		}
		if i != rec.next+1 || n != rec.chunks || e.checkpoint != rec.checkpoint || e.epoch != rec.epoch {
			return at, fmt.Errorf("%w: message %d is chunk %d/%d of checkpoint %d, expected chunk %d/%d of checkpoint %d",
				errGap, seq, i, n, e.checkpoint, rec.next+1, rec.chunks, rec.checkpoint)
		}
		rec.next = i
		rec.data.Write(m.Data())
		if i < n {
			continue
		}
		size := int64(rec.data.Len())
		entries, err := decodeRecord(&rec.data, o.KeyGroup(), func(key, val []byte) error {
			if val == nil {
				return l.Delete(key)
			}
			return l.Set(key, val)
		})
		if err != nil {
			return at, fmt.Errorf("checkpoint %d of key group %d (ending at %d): %w", rec.checkpoint, o.KeyGroup(), seq, err)
		}
		st.Records++
		st.RecordEntries += entries
		st.RecordBytes += size
		at = state.Position{Seq: seq, Epoch: e.epoch}
		rec = nil
	}
	if rec != nil {
		return at, fmt.Errorf("%w: the changelog ends inside checkpoint %d", errGap, rec.checkpoint)
	}
	return at, nil
}

// pendingRecord collects the chunks of a checkpoint record.
type pendingRecord struct {
	checkpoint uint64
	epoch      uint64
	chunks     int
	next       int // chunks read so far
	data       bytes.Buffer
}

func parseChunk(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		i, err = strconv.Atoi(a)
		if err == nil {
			n, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || i < 1 || i > n {
		return 0, 0, fmt.Errorf("chunk %q is not i/n", s)
	}
	return i, n, nil
}
