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
	"sync/atomic"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/egress"
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
	// Flush waits until the at-least-once records handed to the publisher
	// so far are stored: a checkpoint must not cover a record that was
	// never published.
	Flush(ctx context.Context) error
}

// Store is what the coordinator needs of the state store; *state.Store
// is the one it runs with.
type Store interface {
	// Commit writes the overlays and meta as one synced batch.
	Commit(overlays []*state.Overlay, meta *state.Overlay) (int64, error)
	LatestManifest() (*storagev1.Manifest, bool, error)
	PendingEgress(from string, limit int) ([]*storagev1.EgressRecord, error)
	DeleteEgress(msgIDs ...string) error
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
	// Commit, when set, makes a sealed checkpoint durable instead of the
	// store's Commit, and publishes its egress (cluster mode: the changelog
	// in NATS first, then the store). An error fails the checkpoint.
	Commit func(ctx context.Context, cm *Commit) error
	// Begin, when set, is called with each checkpoint's id before its
	// barriers are sent (cluster mode attaches moves of key groups to it).
	Begin func(id uint64)
}

// Coordinator drives a [Core]: it starts checkpoints on the interval and on
// demand, passes barriers, parts and reader sequences, commits what the
// core seals, tells the shards, and publishes the egress. One checkpoint is
// in progress at a time.
type Coordinator struct {
	cfg     Config
	store   Store
	shards  []Shard
	readers []Reader
	pub     Publisher
	log     *slog.Logger
	m       *Metrics

	held   atomic.Bool // only checkpoints asked for with Checkpoint are taken
	parts  chan *shard.Part
	seqs   chan readerSeq
	want   chan struct{}
	demand chan chan result

	mu struct {
		sync.Mutex
		// core is changed by Run's goroutine; what Latest reads of it
		// changes under mu.
		core           *Core
		commitErr      error // of the last failed write, while writes fail
		commitErrSince time.Time
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
func New(cfg Config, store Store, shards []Shard, readers []Reader, pub Publisher, m *Metrics, log *slog.Logger) *Coordinator {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 10
	}
	names := make([]string, len(readers))
	for i, r := range readers {
		names[i] = r.Name()
	}
	c := &Coordinator{
		cfg: cfg, store: store, shards: shards, readers: readers, pub: pub, m: m, log: log,
		parts:  make(chan *shard.Part, len(shards)),
		seqs:   make(chan readerSeq, len(readers)+1),
		want:   make(chan struct{}, 1),
		demand: make(chan chan result),
	}
	c.mu.core = NewCore(len(shards), names, cfg.DeploymentID, cfg.Retain, nil)
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

// Latest returns the latest complete checkpoint, nil when there is none,
// and the id of the one in progress, 0 when none is.
func (c *Coordinator) Latest() (*storagev1.Manifest, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.core.Latest(), c.mu.core.InProgress()
}

// Recover resumes after the last complete checkpoint, and publishes the
// egress a crash may have left unpublished. Message ids are stable, so a
// record published before the crash is dropped by JetStream as a
// duplicate.
func (c *Coordinator) Recover(ctx context.Context) error {
	last, _, err := c.store.LatestManifest()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.mu.core.last = last
	c.mu.Unlock()
	return c.publishPending(ctx)
}

// Hold stops the checkpoints on the interval and on pressure: after a
// clean stop's final checkpoint, nothing may follow it, so that a savepoint
// holds exactly the checkpoint the stop reported.
func (c *Coordinator) Hold() { c.held.Store(true) }

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
		if waiter == nil && c.held.Load() {
			continue
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
	core := c.mu.core
	id, err := core.Begin()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			c.mu.Lock()
			core.Abort()
			c.mu.Unlock()
		}
	}()
	if c.cfg.Begin != nil {
		c.cfg.Begin(id)
	}
	for _, r := range c.readers {
		r.RequestBarrier(id)
	}
	src := c.Source()
	for _, s := range c.shards {
		s.Inbox().Push(shard.Item{Source: src, Barrier: id})
	}
	for !core.Ready() {
		select {
		case p := <-c.parts:
			if err := core.AddPart(p); err != nil {
				return nil, err
			}
		case s := <-c.seqs:
			core.AddReader(s.id, s.name, s.seq)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// At-least-once egress that the parts' effects produced must be stored
	// before those effects are.
	if err := c.pub.Flush(ctx); err != nil {
		return nil, fmt.Errorf("checkpoint %d: waiting for at-least-once egress: %w", id, err)
	}
	cm, err := core.Seal(time.Now(), time.Since(start))
	if err != nil {
		return nil, err
	}
	if c.cfg.Commit != nil {
		err = c.cfg.Commit(ctx, cm)
	} else {
		err = c.commit(ctx, cm.Overlays, cm.Meta)
	}
	if err != nil {
		return nil, err
	}
	for _, p := range cm.Parts {
		c.shards[p.Shard].Committed(p)
	}
	c.mu.Lock()
	core.Done()
	c.mu.Unlock()
	done = true
	c.m.observe(cm.Manifest, cm.Egress)
	c.log.Debug("checkpoint complete", "id", id, "duration", time.Since(start), "bytes", cm.Manifest.GetBytes(), "egress", cm.Egress)
	if err := c.publishPending(ctx); err != nil {
		return cm.Manifest, err
	}
	if c.cfg.OnComplete != nil {
		c.cfg.OnComplete(cm.Manifest)
	}
	return cm.Manifest, nil
}

// commit writes a checkpoint, retrying while the disk refuses (a full disk
// is the usual cause): nothing is lost while it waits, intake pauses as
// the shards' uncommitted state reaches its budget, and readiness reports
// the failure.
func (c *Coordinator) commit(ctx context.Context, overlays []*state.Overlay, meta *state.Overlay) error {
	retry := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 10 * time.Second}}
	for {
		_, err := c.store.Commit(overlays, meta)
		c.mu.Lock()
		if err == nil {
			c.mu.commitErr = nil
		} else if c.mu.commitErr == nil {
			c.mu.commitErr, c.mu.commitErrSince = err, time.Now()
		}
		c.mu.Unlock()
		if err == nil {
			if retry.Retries() > 0 {
				c.log.Info("writing checkpoint succeeded again", "failed_attempts", retry.Retries())
			}
			return nil
		}
		c.m.commitFailures.Inc()
		d := retry.Next()
		if retry.Retries() == 1 || retry.Retries()%10 == 0 {
			c.log.Error("writing checkpoint failed; intake pauses, queries go on; retrying",
				"err", err, "attempts", retry.Retries(), "retry_in", d)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
}

// CommitError returns the error of the last failed attempt to write a
// checkpoint, and since when writes fail, while they do; nil otherwise.
func (c *Coordinator) CommitError() (error, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.commitErr, c.mu.commitErrSince
}

// publishPending publishes the egress of complete checkpoints.
func (c *Coordinator) publishPending(ctx context.Context) error {
	return egress.PublishCommitted(ctx, c.store, c.pub)
}
