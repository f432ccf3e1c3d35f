package checkpoint

import (
	"fmt"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

// Core is the coordinator's logic: which checkpoint is in progress, which
// parts and reader sequences it still waits for, and what its commit
// holds. It does no I/O, starts no goroutine and reads no clock: the
// Coordinator drives it, and tests step it.
type Core struct {
	shards     int
	readers    []string
	deployment string
	retain     int
	last       *storagev1.Manifest // latest complete
	cur        *round              // in progress, nil when none is
}

// round is a checkpoint in progress.
type round struct {
	man      *storagev1.Manifest
	parts    []*shard.Part
	answered map[string]bool // readers whose sequence came
}

// NewCore returns the logic of a coordinator of shards and the named
// readers, resuming after last (nil for none). Message ids of egress start
// with deployment; the newest retain manifests are kept.
func NewCore(shards int, readers []string, deployment string, retain int, last *storagev1.Manifest) *Core {
	return &Core{shards: shards, readers: readers, deployment: deployment, retain: retain, last: last}
}

// Latest returns the latest complete checkpoint, nil when there is none.
func (c *Core) Latest() *storagev1.Manifest { return c.last }

// InProgress returns the id of the checkpoint in progress, 0 when none is.
func (c *Core) InProgress() uint64 {
	if c.cur == nil {
		return 0
	}
	return c.cur.man.GetId()
}

// Begin starts the next checkpoint and returns its id. The driver then asks
// every reader for barrier id and sends barrier id to every shard.
func (c *Core) Begin() (uint64, error) {
	if c.cur != nil {
		return 0, fmt.Errorf("checkpoint %d is still in progress", c.cur.man.GetId())
	}
	id := c.last.GetId() + 1
	man := &storagev1.Manifest{Id: id, ReaderSequences: map[string]uint64{}, Shards: uint32(c.shards)}
	// Readers that emit nothing keep their sequence.
	for k, v := range c.last.GetReaderSequences() {
		man.ReaderSequences[k] = v
	}
	c.cur = &round{man: man, answered: make(map[string]bool, len(c.readers))}
	return id, nil
}

// AddPart takes a shard's part of the checkpoint in progress.
func (c *Core) AddPart(p *shard.Part) error {
	switch {
	case c.cur == nil:
		return fmt.Errorf("shard %d sent a part of checkpoint %d while none is in progress", p.Shard, p.ID)
	case p.ID != c.cur.man.GetId():
		return fmt.Errorf("checkpoint %d: shard %d sent a part of checkpoint %d", c.cur.man.GetId(), p.Shard, p.ID)
	}
	for _, q := range c.cur.parts {
		if q.Shard == p.Shard {
			return fmt.Errorf("checkpoint %d: shard %d sent its part twice", p.ID, p.Shard)
		}
	}
	c.cur.parts = append(c.cur.parts, p)
	return nil
}

// AddReader takes the sequence a reader had delivered when it emitted
// barrier id. A sequence of another checkpoint is ignored.
func (c *Core) AddReader(id uint64, name string, seq uint64) {
	if c.cur == nil || id != c.cur.man.GetId() {
		return
	}
	c.cur.man.ReaderSequences[name] = seq
	c.cur.answered[name] = true
}

// Ready reports whether every shard's part and every reader's sequence of
// the checkpoint in progress came.
func (c *Core) Ready() bool {
	return c.cur != nil && len(c.cur.parts) == c.shards && len(c.cur.answered) == len(c.readers)
}

// Commit is what makes a checkpoint durable: the shards' overlays and a
// metadata overlay, written as one batch.
type Commit struct {
	Manifest *storagev1.Manifest
	Overlays []*state.Overlay
	Meta     *state.Overlay // egress records with their ids, the manifest, retention
	Parts    []*shard.Part  // to tell the shards once it is durable
	Egress   int            // records it publishes once durable
}

// Seal builds the commit of the checkpoint in progress, which must be
// Ready. Each exactly-once egress record gets its message id:
// <deployment>-<checkpoint>-<shard>-<index>, zero-padded so that pending
// records list in publication order; a publish repeated after a crash
// carries the same id.
func (c *Core) Seal(completed time.Time, duration time.Duration) (*Commit, error) {
	if !c.Ready() {
		return nil, fmt.Errorf("checkpoint %d is not ready to commit", c.InProgress())
	}
	man, parts := c.cur.man, c.cur.parts
	cm := &Commit{Manifest: man, Overlays: make([]*state.Overlay, len(parts)), Meta: state.NewOverlay(), Parts: parts}
	var pause time.Duration
	for i, p := range parts {
		cm.Overlays[i] = p.Overlay
		pause = max(pause, p.Pause)
		for j, rec := range p.Egress {
			rec.MsgId = fmt.Sprintf("%s-%020d-%05d-%010d", c.deployment, man.GetId(), p.Shard, j)
			if err := state.PutEgress(cm.Meta, rec); err != nil {
				return nil, err
			}
			cm.Egress++
		}
	}
	man.CompletedAtUnixMillis = completed.UnixMilli()
	man.DurationMillis = float64(duration.Microseconds()) / 1000
	man.PauseMillis = float64(pause.Microseconds()) / 1000
	for _, o := range cm.Overlays {
		man.Bytes += o.DataBytes()
	}
	man.Bytes += cm.Meta.DataBytes()
	if err := state.PutManifest(cm.Meta, man); err != nil {
		return nil, err
	}
	if id := man.GetId(); c.retain > 0 && id > uint64(c.retain) {
		state.DeleteManifest(cm.Meta, id-uint64(c.retain))
	}
	return cm, nil
}

// Done records that the checkpoint in progress is durable: it becomes the
// latest.
func (c *Core) Done() {
	if c.cur != nil {
		c.last, c.cur = c.cur.man, nil
	}
}

// Abort drops the checkpoint in progress; the next one starts afresh.
func (c *Core) Abort() { c.cur = nil }
