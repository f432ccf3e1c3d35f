package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
	"github.com/twinflow/twinflow/runtime/state"
)

// Snapshots and compaction
//
// A changelog grows with every checkpoint; what bounds a restore is a
// snapshot: all keys of a key group at one element of its changelog,
// written by its owner from its store into the cluster's object store.
// Once a snapshot at sequence S is recorded, the changelog elements before
// S are purged (S itself stays: the last element of a subject is what the
// next write expects, so a subject is never emptied). A restore reads the
// latest snapshot and the elements after it.
//
// The pointer snapshot.<kg> in the cluster bucket names the latest
// snapshot. It only moves forward (compare-and-set, and only to a larger
// sequence), so a slow or fenced owner finishing an old snapshot can never
// replace a newer one. A snapshot needs no fencing: it is a copy of the
// chain up to S, whoever made it. The object's name is random because the
// position is known only once the store's scan has read it.
//
// [SnapshotDue] is the policy: take a snapshot when the changelog written
// since the last one is larger than that snapshot (and than 1 MiB), so a
// restore reads at most about twice the key group's size, and the changelog
// costs at most about as much storage as the snapshots.

// SnapshotInfo describes a key group's snapshot: the value of its pointer.
type SnapshotInfo struct {
	KeyGroup int       `json:"kg"`
	Object   string    `json:"object"`
	Seq      uint64    `json:"seq"`   // the changelog element it is a copy of
	Epoch    uint64    `json:"epoch"` // of the owner that wrote that element
	Entries  int       `json:"entries"`
	Bytes    int64     `json:"bytes"` // of the object
	Taken    time.Time `json:"taken"`
}

// minSnapshotInterval is the changelog a key group writes at least between
// two snapshots.
const minSnapshotInterval = 1 << 20

// SnapshotDue reports whether a key group whose latest snapshot is
// snapshotBytes large, and that has written changelogBytes since, should
// be snapshotted.
func SnapshotDue(changelogBytes, snapshotBytes int64) bool {
	return changelogBytes > max(snapshotBytes, minSnapshotInterval)
}

// SnapshotDue reports whether the owned key group should be snapshotted
// now (see the function SnapshotDue).
func (o *Owned) SnapshotDue() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return SnapshotDue(o.mu.sinceBytes, o.mu.snapshotBytes)
}

// Snapshot copies the owned key group's data from store into the object
// store, as of the position the store holds for it, records it as the key
// group's latest snapshot, and then deletes the snapshot it replaces and
// purges the changelog before it. The store must hold the key group as
// committed: its position is in the key group's changelog. When a newer
// snapshot exists already, nothing changes and the newer one is returned.
func (c *Cluster) Snapshot(ctx context.Context, o *Owned, store *state.Store) (SnapshotInfo, error) {
	kg := o.KeyGroup()
	fail := func(err error) (SnapshotInfo, error) {
		return SnapshotInfo{}, fmt.Errorf("cluster %s: snapshot of key group %d: %w", c.cfg.Name, kg, err)
	}
	// An upload that a stream's leader election interrupts is made again,
	// from a new scan, under a new name.
	var info SnapshotInfo
	var err error
	r := backoff.Retrier{Policy: retryPolicy}
	for {
		info, err = c.upload(ctx, o, store)
		if err == nil || !natserr.Transient(err) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(r.Next()):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fail(err)
	}

	// Point at it, unless a newer snapshot is there already.
	cur, err := c.pointAt(ctx, info)
	if err != nil || cur.Object != info.Object {
		_ = retry(ctx, func(ctx context.Context) error { return c.snap.Delete(ctx, info.Object) })
		if err != nil {
			return fail(fmt.Errorf("record the snapshot: %w", err))
		}
		return cur.SnapshotInfo, nil
	}
	o.mu.Lock()
	o.mu.snapshotBytes = info.Bytes
	o.mu.sinceBytes, o.mu.sinceRecords = 0, 0 // approximately: what came after info.Seq is not counted
	o.mu.Unlock()

	// What the new snapshot replaces. A failure here leaves garbage, not
	// damage: the next snapshot compacts again.
	if cur.replaced != "" {
		err := retry(ctx, func(ctx context.Context) error { return c.snap.Delete(ctx, cur.replaced) })
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return info, fmt.Errorf("cluster %s: snapshot of key group %d taken, but the one it replaces stays: %w", c.cfg.Name, kg, err)
		}
	}
	err = retry(ctx, func(ctx context.Context) error {
		return c.log.Purge(ctx, jetstream.WithPurgeSubject(o.subject), jetstream.WithPurgeSequence(info.Seq))
	})
	if err != nil {
		return info, fmt.Errorf("cluster %s: snapshot of key group %d taken, but its changelog was not compacted: %w", c.cfg.Name, kg, err)
	}
	return info, nil
}

// pointed is the snapshot pointer after pointAt, and the object it
// replaced.
type pointed struct {
	SnapshotInfo
	replaced string
}

// pointAt moves key group info.KeyGroup's snapshot pointer to info unless
// it points at a snapshot at least as new, and returns what it points at
// then. A write whose outcome was unknown is found out by reading the
// pointer again, so the pointer never moves back.
func (c *Cluster) pointAt(ctx context.Context, info SnapshotInfo) (pointed, error) {
	val, err := json.Marshal(info)
	if err != nil {
		return pointed{}, err
	}
	key := snapshotPrefix + strconv.Itoa(info.KeyGroup)
	replaced := ""
	r := backoff.Retrier{Policy: retryPolicy}
	for {
		cur, rev, err := c.snapshotPointer(ctx, info.KeyGroup)
		if err != nil {
			return pointed{}, err
		}
		if cur.Object == info.Object {
			return pointed{cur, replaced}, nil // written, maybe by an attempt that timed out
		}
		if cur.Object != "" && cur.Seq >= info.Seq {
			return pointed{SnapshotInfo: cur}, nil
		}
		replaced = cur.Object
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		if rev == 0 {
			_, err = c.kv.Create(actx, key, val)
		} else {
			_, err = c.kv.Update(actx, key, val, rev)
		}
		cancel()
		if err == nil {
			return pointed{info, replaced}, nil
		}
		if ctx.Err() != nil {
			return pointed{}, err
		}
		select {
		case <-ctx.Done():
			return pointed{}, err
		case <-time.After(r.Next()):
		}
	}
}

// snapshotPointer reads key group kg's snapshot pointer and its revision;
// a zero SnapshotInfo and revision when there is none.
func (c *Cluster) snapshotPointer(ctx context.Context, kg int) (SnapshotInfo, uint64, error) {
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) (err error) {
		e, err = c.kv.Get(ctx, snapshotPrefix+strconv.Itoa(kg))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return SnapshotInfo{}, 0, nil
	}
	if err != nil {
		return SnapshotInfo{}, 0, fmt.Errorf("read the snapshot pointer: %w", err)
	}
	var info SnapshotInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil || info.KeyGroup != kg {
		return SnapshotInfo{}, 0, fmt.Errorf("the snapshot pointer of key group %d is corrupt: %q", kg, e.Value())
	}
	return info, e.Revision(), nil
}

// LatestSnapshot returns key group kg's latest snapshot; ok is false when
// it has none.
func (c *Cluster) LatestSnapshot(ctx context.Context, kg int) (info SnapshotInfo, ok bool, err error) {
	if err := c.checkKeyGroup(kg); err != nil {
		return SnapshotInfo{}, false, err
	}
	info, rev, err := c.snapshotPointer(ctx, kg)
	if err != nil {
		return SnapshotInfo{}, false, fmt.Errorf("cluster %s: key group %d: %w", c.cfg.Name, kg, err)
	}
	return info, rev != 0, nil
}

// errUploadEnded is what the scan of a snapshot meets when its upload
// ended first.
var errUploadEnded = errors.New("upload ended")

// upload writes the owned key group's data from store into a new object,
// as of the position the store holds for it.
func (c *Cluster) upload(ctx context.Context, o *Owned, store *state.Store) (SnapshotInfo, error) {
	kg := o.KeyGroup()
	info := SnapshotInfo{KeyGroup: kg, Object: "kg-" + strconv.Itoa(kg) + "-" + randomHex(8), Taken: time.Now().UTC().Truncate(time.Millisecond)}
	pr, pw := io.Pipe()
	scanned := make(chan error, 1)
	go func() {
		w, err := newRecordWriter(pw, kg)
		if err == nil {
			p, ok, serr := store.ScanKeyGroup(kg, func(key, val []byte) error { return w.add(key, val) })
			entries := w.entries
			cerr := w.close()
			switch {
			case serr != nil:
				err = serr
			case !ok:
				err = errors.New("the store holds no position for the key group: restore it first")
			case p.Seq > o.Head():
				err = fmt.Errorf("the store is at %d, past the owner's last element %d", p.Seq, o.Head())
			default:
				info.Seq, info.Epoch, info.Entries = p.Seq, p.Epoch, entries
				err = cerr
			}
		}
		_ = pw.CloseWithError(err)
		scanned <- err
	}()
	actx, stalled := watchProgress(ctx, uploadStall)
	obj, err := c.snap.Put(actx, jetstream.ObjectMeta{Name: info.Object}, progressReader{pr, stalled})
	if err != nil && stalled.fired() {
		err = fmt.Errorf("no progress for %v (acknowledgements lost to a leader election, say): %w", uploadStall, context.DeadlineExceeded)
	}
	stalled.stop()
	_ = pr.CloseWithError(errUploadEnded)
	if serr := <-scanned; serr != nil && !errors.Is(serr, errUploadEnded) {
		if err == nil {
			_ = c.snap.Delete(ctx, info.Object)
		}
		return SnapshotInfo{}, serr
	}
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("upload %s: %w", info.Object, err)
	}
	info.Bytes = int64(obj.Size)
	return info, nil
}

// uploadStall bounds how long an upload may make no progress: take no
// byte of the scan, or, after the last, wait for the acknowledgements of
// its chunks. Chunks whose acknowledgements a stream's leader election
// lost are waited for until the context ends otherwise. The attempt then
// ends as timed out, and Snapshot makes another.
const uploadStall = 10 * time.Second

// stallWatch cancels a context when nothing called progress for a while.
type stallWatch struct {
	progressed chan struct{}
	cancel     context.CancelFunc
	done       chan struct{}
	stalled    chan struct{}
}

// watchProgress returns a context that ends when ctx does or when the
// watch sees no progress for limit.
func watchProgress(ctx context.Context, limit time.Duration) (context.Context, *stallWatch) {
	wctx, cancel := context.WithCancel(ctx)
	w := &stallWatch{progressed: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), stalled: make(chan struct{})}
	go func() {
		t := time.NewTimer(limit)
		defer t.Stop()
		for {
			select {
			case <-w.progressed:
				t.Reset(limit)
			case <-t.C:
				close(w.stalled)
				cancel()
				return
			case <-w.done:
				return
			case <-wctx.Done():
				return
			}
		}
	}()
	return wctx, w
}

func (w *stallWatch) progress() {
	select {
	case w.progressed <- struct{}{}:
	default:
	}
}

// fired reports whether the watch ended the context.
func (w *stallWatch) fired() bool {
	select {
	case <-w.stalled:
		return true
	default:
		return false
	}
}

func (w *stallWatch) stop() {
	close(w.done)
	w.cancel()
}

// progressReader tells a stall watch of every read.
type progressReader struct {
	r io.Reader
	w *stallWatch
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.w.progress()
	return n, err
}
