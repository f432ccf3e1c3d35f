package runtime

// Live moves of key groups in cluster mode. A worker whose plan hands key
// groups off or takes some over does it at one checkpoint of its running
// pipeline, so that its other key groups never stop:
//
//  1. The driver acquires the leases of the key groups it takes and
//     restores them into the store (their key ranges, which the pipeline
//     leaves alone while it does not own them). The key groups it hands
//     off are finished first, as FLIP-147 finishes a job, but each alone:
//     a first checkpoint stops their intake (the readers deliver none of
//     their messages after its barrier, and their positions stay there),
//     and the driver waits, up to 5 s, until their queued and
//     in-flight work is done, so that their next owners repeat nothing.
//  2. It attaches the move to the next checkpoint (cm.moveAt gives it to
//     whoever handles that checkpoint's barrier). Each reader, as it emits
//     the barrier, stops delivering the key groups that leave and starts
//     delivering those that join from their committed positions (seeking
//     back when they are behind it); each shard, at its snapshot, ends the
//     key groups that leave (their mailboxes go into the checkpoint, and
//     nothing of them runs after) and queues the stored mailboxes of those
//     that join (package shard, moves.go).
//  3. The committer writes that checkpoint with the last state, positions
//     and mailboxes of the key groups that leave, and only then takes them
//     out of its set and puts in those that join: positions of a joined key
//     group are written from the next checkpoint on.
//  4. The driver releases the leases of the key groups that left and
//     deletes them from the store; their next owners restore that
//     checkpoint.
//
// If the checkpoint fails, the driver falls back to a rebuild of the whole
// pipeline, restored from the changelogs, as after a crash.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/routing"
	"github.com/twinflow/twinflow/runtime/shard"
)

const (
	// moveTimeout bounds the checkpoint that carries a live move.
	moveTimeout = 30 * time.Second
	// finishTimeout bounds the wait for the work of key groups to hand
	// off (or the stop timeout, when shorter): messages from the key
	// groups that stay, and delayed messages, may keep them busy.
	finishTimeout = 5 * time.Second
)

// move is a change of the key groups a running pipeline owns, made at one
// checkpoint.
type move struct {
	stopIntake []int                     // handed off next: not delivered after the barrier
	release    []int                     // handed off: not processed after the barrier
	adopt      map[int]*cluster.Owned    // restored here: processed after the barrier
	start      map[int]map[string]uint64 // the adopted key groups' committed positions, by reader
	leases     []cluster.Lease           // of the key groups released

	id        uint64 // the checkpoint that carries it, once it began
	committed bool   // set by the committer
}

// joining lists the adopted key groups.
func (m *move) joining() []int { return slices.Sorted(maps.Keys(m.adopt)) }

// moved reports whether the first key group of a pair (a receiver's mark
// or a sender's sequence) moved in or out with m.
func (m *move) moved() func([2]int, uint64) bool {
	kgs := append(m.joining(), m.release...)
	return func(pair [2]int, _ uint64) bool { return slices.Contains(kgs, pair[0]) }
}

// leaves reports whether key group kg leaves with the move.
func (m *move) leaves(kg int) bool { return m != nil && slices.Contains(m.release, kg) }

// queueMove attaches m to the next checkpoint that begins.
func (cm *clusterMode) queueMove(m *move) {
	cm.moveMu.Lock()
	defer cm.moveMu.Unlock()
	cm.nextMove = m
}

// beginCheckpoint is the coordinator's Begin: the checkpoint takes the
// queued move.
func (cm *clusterMode) beginCheckpoint(id uint64) {
	cm.moveMu.Lock()
	defer cm.moveMu.Unlock()
	for old := range cm.moves {
		if old+16 < id {
			delete(cm.moves, old)
		}
	}
	if m := cm.nextMove; m != nil {
		m.id = id
		cm.moves[id] = m
		cm.nextMove = nil
	}
}

// moveAt returns the move checkpoint id carries, nil when none.
func (cm *clusterMode) moveAt(id uint64) *move {
	cm.moveMu.Lock()
	defer cm.moveMu.Unlock()
	return cm.moves[id]
}

// shardMoves is the shards' view of moveAt.
func (cm *clusterMode) shardMoves(id uint64) (leave, join []int) {
	m := cm.moveAt(id)
	if m == nil {
		return nil, nil
	}
	return m.release, m.joining()
}

// outcome reports whether the move's checkpoint committed, and forgets
// the move.
func (cm *clusterMode) outcome(m *move) bool {
	cm.moveMu.Lock()
	defer cm.moveMu.Unlock()
	if cm.nextMove == m {
		cm.nextMove = nil
	}
	delete(cm.moves, m.id)
	return m.committed
}

// applyMove is the committer's part, after checkpoint m.id is committed
// and its egress published: the key groups that left are no longer
// written, and those that joined are from the next checkpoint on. At the
// barrier, the readers delivered up to seqs of the key groups that stay,
// and may go back for those that joined: the positions written for the
// ones that stay never go below seqs again.
func (cm *clusterMode) applyMove(ctx context.Context, m *move, seqs map[string]uint64) {
	var stay []int
	for kg := range cm.owned {
		if !m.leaves(kg) {
			stay = append(stay, kg)
		}
	}
	cm.pos.moved(m, stay, seqs)
	cm.ownedMu.Lock()
	for _, kg := range m.release {
		delete(cm.owned, kg)
	}
	for kg, o := range m.adopt {
		cm.owned[kg] = o
	}
	cm.ownedMu.Unlock()
	for _, kg := range m.release {
		delete(cm.unsent, kg)
		delete(cm.published, kg)
	}
	// Marks by receiver and sequences by sender of the key groups that
	// moved are read from the store again when needed.
	moved := m.moved()
	maps.DeleteFunc(cm.marks, moved)
	maps.DeleteFunc(cm.sent, moved)
	cm.publishEgress(ctx, m.joining())
	cm.moveMu.Lock()
	m.committed = true
	cm.moveMu.Unlock()
}

// moveLive carries out a plan on the running pipeline (see the top of
// this file). restore are leases held whose key groups are not restored.
// It reports false when the move did not happen and the pipeline must be
// rebuilt instead.
func (cm *clusterMode) moveLive(ctx context.Context, plan cluster.Plan, restore []cluster.Lease) (bool, error) {
	start := time.Now()
	adopt, err := cm.restoreAll(ctx, append(restore, cm.acquireAll(ctx, plan.Acquire)...))
	if err != nil {
		return true, err // the leases stay held; the next plan restores them again
	}
	m := &move{adopt: adopt, start: map[int]map[string]uint64{}}
	for _, l := range plan.HandOff {
		if o := cm.ownedKG(l.KeyGroup); o != nil {
			m.release = append(m.release, l.KeyGroup)
			m.leases = append(m.leases, o.Lease())
			continue
		}
		// Held but never restored here (its restore failed, or a release
		// did): there is nothing of it to finish.
		cm.release(ctx, l)
		if err := cm.dropKeyGroup(l.KeyGroup); err != nil {
			return true, err
		}
	}
	if len(m.release) == 0 && len(m.adopt) == 0 {
		return true, nil
	}
	if len(m.release) > 0 && !cm.finish(ctx, m.release) {
		return false, nil
	}
	for kg := range m.adopt {
		m.start[kg] = map[string]uint64{}
		for _, r := range cm.e.readerNames() {
			p, err := cm.e.store.ReaderPosition(kg, r)
			if err != nil {
				return false, fmt.Errorf("key group %d: reading its position of %s: %w", kg, r, err)
			}
			m.start[kg][r] = p
		}
	}
	if err := cm.checkpointWith(ctx, m); err != nil {
		cm.m.moves.WithLabelValues("failed").Inc()
		cm.log.Warn("moving key groups at a checkpoint failed; rebuilding the pipeline", "err", err,
			"handing_off", len(m.release), "taking", len(m.adopt))
		return false, nil
	}
	var errs []error
	for _, l := range m.leases {
		cm.release(ctx, l)
		if err := cm.e.store.DropKeyGroup(l.KeyGroup); err != nil {
			errs = append(errs, err)
		}
	}
	if m.leaves(0) {
		cm.e.stopRouting()
	}
	if o := m.adopt[0]; o != nil {
		cm.e.startRouting(cm.routingStage(o))
	}
	for kg, pos := range m.start {
		cm.trimmer.adopt(kg, pos[cm.c.InStream()])
	}
	cm.m.moves.WithLabelValues("live").Inc()
	cm.m.owned.Set(float64(cm.ownedCount()))
	cm.log.Info("key groups moved live", "checkpoint", m.id, "owned", cm.ownedCount(), "handed_off", len(m.release),
		"taken", len(m.adopt), "waiting", len(plan.Waiting), "took", time.Since(start).Round(time.Millisecond))
	return true, errors.Join(errs...)
}

// checkpointWith takes a checkpoint that carries m, and reports why m
// did not take effect.
func (cm *clusterMode) checkpointWith(ctx context.Context, m *move) error {
	cm.queueMove(m)
	cctx, cancel := context.WithTimeout(ctx, moveTimeout)
	defer cancel()
	_, err := cm.e.pl().coord.Checkpoint(cctx)
	if cm.outcome(m) {
		return nil
	}
	if err == nil {
		err = errors.New("the checkpoint that carried the move failed")
	}
	return err
}

// finish stops the intake of key groups about to be handed off at a
// checkpoint, and waits until the shards have no work of them that can
// progress (up to finishTimeout or the stop timeout). It reports false
// when the checkpoint failed.
func (cm *clusterMode) finish(ctx context.Context, kgs []int) bool {
	t := time.Now()
	if err := cm.checkpointWith(ctx, &move{stopIntake: kgs}); err != nil {
		cm.m.moves.WithLabelValues("failed").Inc()
		cm.log.Warn("stopping the intake of key groups to hand off failed; rebuilding the pipeline", "err", err, "key_groups", len(kgs))
		return false
	}
	wait := min(finishTimeout, cm.e.cfg.StopTimeout)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		busy := 0
		for _, l := range cm.e.pl().loops {
			_ = l.Do(wctx, func(c *shard.Core) {
				if c.Working(kgs...) {
					busy++
				}
			})
		}
		if busy == 0 {
			cm.log.Debug("key groups to hand off finished their work", "key_groups", len(kgs), "took", time.Since(t).Round(time.Millisecond))
			return true
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-wctx.Done():
			cm.log.Warn("handing key groups off before their work finished; their next owners run it again",
				"key_groups", len(kgs), "shards_busy", busy, "waited", wait)
			return true
		}
	}
}

// ownedKG returns the owned key group kg, nil when it is not owned; from
// any goroutine.
func (cm *clusterMode) ownedKG(kg int) *cluster.Owned {
	cm.ownedMu.RLock()
	defer cm.ownedMu.RUnlock()
	return cm.owned[kg]
}

// ownedCount is how many key groups are owned; from any goroutine.
func (cm *clusterMode) ownedCount() int {
	cm.ownedMu.RLock()
	defer cm.ownedMu.RUnlock()
	return len(cm.owned)
}

// apply is what a reader of cluster mode does at a barrier that carries
// a move m, having delivered up to last: it changes its view and returns
// where to read from.
func (o *ownership) apply(m *move, reader string, last uint64) uint64 {
	for _, kg := range slices.Concat(m.stopIntake, m.release) {
		o.owned[kg] = false
	}
	from := last
	pos := o.start[reader]
	for kg, owned := range o.owned {
		if owned {
			pos[kg] = max(pos[kg], last) // delivered up to last
		}
	}
	for kg, start := range m.start {
		o.owned[kg] = true
		pos[kg] = start[reader]
		from = min(from, start[reader])
	}
	return from
}

// clone returns a copy for one reader.
func (o *ownership) clone() *ownership {
	c := &ownership{k: o.k, owned: slices.Clone(o.owned), start: map[string][]uint64{}}
	for r, pos := range o.start {
		c.start[r] = slices.Clone(pos)
	}
	return c
}

// routedFilter is the filter of the partitioned ingress for a view:
// empty, and not nil, when it owns nothing.
func (cm *clusterMode) routedFilter(o *ownership) []string {
	kgs := o.keyGroups()
	if len(kgs) == 0 {
		return []string{}
	}
	return routing.Filter(cm.c, kgs)
}
