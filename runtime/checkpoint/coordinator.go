// Package checkpoint runs the checkpoint coordinator: it starts checkpoints,
// collects the shards' parts and the ingress readers' sequences, commits
// them with a manifest as one synced Pebble batch, and then publishes the
// exactly-once egress the checkpoint covers. The shard side of the protocol,
// and why it is Chandy–Lamport, is described in package shard.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

// Shard is the coordinator's view of a shard loop.
type Shard interface {
	Inbox() *shard.Inbox
	Committed(p *shard.Part)
}

// Reader is the coordinator's view of an ingress reader.
type Reader interface {
	// Name identifies the reader's stream in manifests.
	Name() string
	// RequestBarrier asks the reader to emit barrier id to every shard
	// between two of its batches and then to call Coordinator.ReaderBarrier.
	RequestBarrier(id uint64)
}

// Publisher publishes egress records, waiting until JetStream stored them.
type Publisher interface {
	Publish(ctx context.Context, recs []*storagev1.EgressRecord) error
}

// Config configures a Coordinator.
type Config struct {
	Interval time.Duration // between checkpoints; default 1s
	Retain   int           // manifests kept for listing; default 10
	// DeploymentID prefixes message ids, so that ids from a data dir that
	// was wiped never collide with earlier ones in the duplicate window.
	DeploymentID string
	// OnComplete, when set, is called after each checkpoint is complete and
	// its egress published, on the coordinator's goroutine.
	OnComplete func(*storagev1.Manifest)
}

// Coordinator starts and completes checkpoints. One checkpoint is in
// progress at a time.
type Coordinator struct {
	cfg     Config
	store   *state.Store
	shards  []Shard
	readers []Reader
	pub     Publisher
	log     *slog.Logger
	m       *Metrics

	parts  chan *shard.Part
	seqs   chan readerSeq
	want   chan struct{}
	demand chan chan result

	mu struct {
		sync.Mutex
		last       *storagev1.Manifest // latest complete
		inProgress uint64
	}
}

type readerSeq struct {
	id   uint64
	name string
	seq  uint64
}

type result struct {
	manifest *storagev1.Manifest
	err      error
}

// New returns a coordinator. Source numbers: shards are 0..len(shards)-1,
// readers follow in order, and the coordinator itself comes last.
func New(cfg Config, store *state.Store, shards []Shard, readers []Reader, pub Publisher, m *Metrics, log *slog.Logger) *Coordinator {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 10
	}
	c := &Coordinator{
		cfg: cfg, store: store, shards: shards, readers: readers, pub: pub, m: m, log: log,
		parts:  make(chan *shard.Part, len(shards)),
		seqs:   make(chan readerSeq, len(readers)+1),
		want:   make(chan struct{}, 1),
		demand: make(chan chan result),
	}
	return c
}

// Source is the coordinator's own barrier source number.
func (c *Coordinator) Source() int { return len(c.shards) + len(c.readers) }

// Part receives a shard's finished part.
func (c *Coordinator) Part(p *shard.Part) { c.parts <- p }

// ReaderBarrier receives the sequence a reader had delivered up to when it
// emitted barrier id.
func (c *Coordinator) ReaderBarrier(id uint64, name string, seq uint64) {
	c.seqs <- readerSeq{id, name, seq}
}

// Want asks for a checkpoint soon. It never blocks.
func (c *Coordinator) Want() {
	select {
	case c.want <- struct{}{}:
	default:
	}
}

// Latest returns the latest complete checkpoint, nil when there is none.
func (c *Coordinator) Latest() (*storagev1.Manifest, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.last, c.mu.inProgress
}

// Recover publishes the egress of the last complete checkpoint that a crash
// may have left unpublished. Message ids are stable, so a record published
// before the crash is dropped by JetStream as a duplicate.
func (c *Coordinator) Recover(ctx context.Context) error {
	last, _, err := c.store.LatestManifest()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.mu.last = last
	c.mu.Unlock()
	return c.publishPending(ctx)
}

// Checkpoint takes a checkpoint now and waits until it is complete.
func (c *Coordinator) Checkpoint(ctx context.Context) (*storagev1.Manifest, error) {
	ch := make(chan result, 1)
	select {
	case c.demand <- ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-ch:
		return r.manifest, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run takes checkpoints on the interval, on demand, and when a shard's
// uncommitted state is at its budget, until ctx ends.
func (c *Coordinator) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		var waiter chan result
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.want:
		case waiter = <-c.demand:
		}
		man, err := c.take(ctx)
		if waiter != nil {
			waiter <- result{man, err}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("checkpoint failed", "err", err)
		}
	}
}

// take runs one checkpoint to completion.
func (c *Coordinator) take(ctx context.Context) (*storagev1.Manifest, error) {
	start := time.Now()
	c.mu.Lock()
	id := uint64(1)
	if c.mu.last != nil {
		id = c.mu.last.GetId() + 1
	}
	c.mu.inProgress = id
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.mu.inProgress = 0
		c.mu.Unlock()
	}()

	for _, r := range c.readers {
		r.RequestBarrier(id)
	}
	src := c.Source()
	for _, s := range c.shards {
		s.Inbox().Push(shard.Item{Source: src, Barrier: id})
	}
	man := &storagev1.Manifest{Id: id, ReaderSequences: map[string]uint64{}, Shards: uint32(len(c.shards))}
	if c.mu.last != nil {
		// Readers that emit nothing keep their sequence.
		for k, v := range c.mu.last.GetReaderSequences() {
			man.ReaderSequences[k] = v
		}
	}
	parts := make([]*shard.Part, 0, len(c.shards))
	answered := make(map[string]bool, len(c.readers))
	for len(parts) < len(c.shards) || len(answered) < len(c.readers) {
		select {
		case p := <-c.parts:
			if p.ID != id {
				return nil, fmt.Errorf("checkpoint %d: shard %d sent a part of checkpoint %d", id, p.Shard, p.ID)
			}
			parts = append(parts, p)
		case s := <-c.seqs:
			if s.id == id {
				man.ReaderSequences[s.name] = s.seq
				answered[s.name] = true
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	overlays := make([]*state.Overlay, len(parts))
	var egress []*storagev1.EgressRecord
	var pause time.Duration
	for i, p := range parts {
		overlays[i] = p.Overlay
		pause = max(pause, p.Pause)
		for j, rec := range p.Egress {
			// Zero-padded, so that pending records list in publication order.
			rec.MsgId = fmt.Sprintf("%s-%020d-%05d-%010d", c.cfg.DeploymentID, id, p.Shard, j)
			egress = append(egress, rec)
		}
	}
	meta := state.NewOverlay()
	for _, rec := range egress {
		if err := state.PutEgress(meta, rec); err != nil {
			return nil, err
		}
	}
	man.CompletedAtUnixMillis = time.Now().UnixMilli()
	man.DurationMillis = float64(time.Since(start).Microseconds()) / 1000
	man.PauseMillis = float64(pause.Microseconds()) / 1000
	for _, o := range overlays {
		man.Bytes += o.DataBytes()
	}
	man.Bytes += meta.DataBytes()
	if err := state.PutManifest(meta, man); err != nil {
		return nil, err
	}
	if id > uint64(c.cfg.Retain) {
		state.DeleteManifest(meta, id-uint64(c.cfg.Retain))
	}
	if err := c.commit(ctx, overlays, meta); err != nil {
		return nil, err
	}
	for i, p := range parts {
		c.shards[p.Shard].Committed(parts[i])
	}
	c.mu.Lock()
	c.mu.last = man
	c.mu.Unlock()
	c.m.observe(man, len(egress))
	c.log.Debug("checkpoint complete", "id", id, "duration", time.Since(start), "bytes", man.Bytes, "egress", len(egress))
	if err := c.publishPending(ctx); err != nil {
		return man, err
	}
	if c.cfg.OnComplete != nil {
		c.cfg.OnComplete(man)
	}
	return man, nil
}

// commit writes a checkpoint, retrying while the disk refuses (a full disk
// is the usual cause): nothing is lost while it waits, and intake pauses as
// the shards' uncommitted state reaches its budget.
func (c *Coordinator) commit(ctx context.Context, overlays []*state.Overlay, meta *state.Overlay) error {
	backoff := 100 * time.Millisecond
	for {
		_, err := c.store.Commit(overlays, meta)
		if err == nil {
			return nil
		}
		c.m.commitFailures.Inc()
		c.log.Error("writing checkpoint failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// publishPending publishes the egress of complete checkpoints in order,
// and forgets the records once JetStream has them.
func (c *Coordinator) publishPending(ctx context.Context) error {
	const page = 4096
	for {
		recs, err := c.store.PendingEgress("", page)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		if err := c.pub.Publish(ctx, recs); err != nil {
			return fmt.Errorf("publishing %d egress records: %w", len(recs), err)
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.GetMsgId()
		}
		if err := c.store.DeleteEgress(ids...); err != nil {
			return err
		}
	}
}
