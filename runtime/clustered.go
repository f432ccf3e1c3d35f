package runtime

// Cluster mode: the engine as one worker of several that share the key
// groups through runtime/cluster. The driver (run) follows the membership:
// whenever this worker must acquire or hand off key groups, it moves them
// at a checkpoint of the running pipeline, and its other key groups go on
// (clustermove.go). The first plan of a worker, a plan after a refused
// commit, and a move whose checkpoint failed rebuild the pipeline instead:
// it is stopped (shards, readers, coordinator), what it hands off is
// released, what it takes is acquired and restored, every key group it
// does not own is deleted from its store, and the pipeline is built again
// over the key groups it owns; work not yet checkpointed is dropped, as in
// a crash, and the positions and marks committed with each key group make
// it run again exactly once. Checkpoints go to the key groups' changelogs
// first and to the store second (commit).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"

	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/routing"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

const (
	// restoreParallelism is how many key groups are restored at once:
	// measured, a worker's share of 10,000 addresses restores in 0.26–0.45 s
	// 8 at a time, 0.76 s one at a time.
	restoreParallelism = 8
	// idlePositionEvery: a key group without writes in a checkpoint has its
	// reader positions advanced only every this many checkpoints. Skipping
	// them is safe (no message of the key group was read in between) and
	// keeps a checkpoint of an idle worker empty.
	idlePositionEvery = 10
	// replanEvery bounds how long a plan that could not be carried out
	// (a lease that changed meanwhile) waits for the next try.
	replanEvery = time.Second
)

// ownership is the set of key groups a pipeline processes, and where each
// reader starts for each of them; fixed for the pipeline's life.
type ownership struct {
	k     int
	owned []bool
	start map[string][]uint64 // by reader: position of each key group
}

func newOwnership(k int) *ownership {
	return &ownership{k: k, owned: make([]bool, k), start: map[string][]uint64{}}
}

// Owns reports whether the key group is processed here. In single-process
// mode (nil) every key group is.
func (o *ownership) Owns(kg int) bool { return o == nil || o.owned[kg] }

// keyGroups lists the owned key groups in order.
func (o *ownership) keyGroups() []int {
	var out []int
	for kg, ok := range o.owned {
		if ok {
			out = append(out, kg)
		}
	}
	return out
}

// from returns the sequence a reader starts after: the lowest position of
// the owned key groups; ok is false when none is owned.
func (o *ownership) from(reader string) (seq uint64, ok bool) {
	pos := o.start[reader]
	for kg, owned := range o.owned {
		if owned && (!ok || pos[kg] < seq) {
			seq, ok = pos[kg], true
		}
	}
	return seq, ok
}

// accepts reports whether a reader's message at seq to key group kg is to
// be processed: the key group is owned and had not read it.
func (o *ownership) accepts(reader string, kg int, seq uint64) bool {
	return o.owned[kg] && seq > o.start[reader][kg]
}

// clusterMode is the engine's part in a cluster.
type clusterMode struct {
	e      *Engine
	c      *cluster.Cluster
	worker string
	k      int
	log    *slog.Logger
	m      *clusterMetrics

	mu  sync.Mutex
	mem *cluster.Membership // replaced when the worker joins again

	// started: the first pipeline over owned key groups was built; from
	// then on moves are live.
	started bool
	// moves attached to checkpoints (clustermove.go).
	moveMu   sync.Mutex
	nextMove *move
	moves    map[uint64]*move

	// Changed by the driver while no pipeline runs, and by the committer
	// (the coordinator's goroutine) while one does. Other goroutines read
	// owned under ownedMu, which its writers hold.
	ownedMu   sync.RWMutex
	owned     map[int]*cluster.Owned
	pos       *positions
	marks     map[[2]int]uint64 // committed high-water marks, by [receiver, sender]
	sent      map[[2]int]uint64 // committed batch sequences, by [sender, receiver]
	published map[int][]string  // egress published since the last commit, by key group
	unsent    map[int]bool      // key groups whose egress may not all be published
	commits   uint64
	stored    uint64 // checkpoint whose changelog commit succeeded, until its local commit does
	gen       int

	// The pipeline's decoder of the partitioned ingress (nil when it owns
	// no key group) and the trimmer of its subjects.
	inDec   *routing.Decoder
	trimmer *routedTrimmer

	reload chan struct{} // a commit was fenced or of unknown outcome
	// due are the key groups to snapshot, queued at most once each.
	due       chan *cluster.Owned
	dueMu     sync.Mutex
	dueQueued map[int]bool
	stop      context.CancelFunc
	done      chan struct{}
}

// startCluster joins the cluster and starts the driver. The engine's store,
// NATS connection and publisher are open.
func (e *Engine) startCluster(ctx context.Context) error {
	c, err := cluster.Open(ctx, e.js, cluster.Config{Name: e.cfg.Cluster, KeyGroups: e.cfg.KeyGroups,
		Replicas: e.cfg.ClusterReplicas, MemberTTL: e.cfg.ClusterMemberTTL})
	if err != nil {
		return err
	}
	worker, err := cluster.WorkerID(e.cfg.DataDir)
	if err != nil {
		return err
	}
	cm := &clusterMode{
		e: e, c: c, worker: worker, k: c.KeyGroups(), log: e.log.With("cluster", e.cfg.Cluster, "worker", worker),
		m:     newClusterMetrics(e.reg),
		owned: map[int]*cluster.Owned{}, pos: newPositions(),
		marks: map[[2]int]uint64{}, sent: map[[2]int]uint64{}, published: map[int][]string{}, unsent: map[int]bool{},
		reload: make(chan struct{}, 1), done: make(chan struct{}), moves: map[uint64]*move{},
		due: make(chan *cluster.Owned, e.cfg.KeyGroups), dueQueued: map[int]bool{},
	}
	e.cl = cm
	// An empty pipeline until the first plan: the admin API, readiness and
	// the coordinator exist from the start.
	if err := e.buildPipeline(cm.deployment(), newOwnership(cm.k)); err != nil {
		return err
	}
	e.runPipeline()
	if err := e.startAdmin(); err != nil {
		return err
	}
	if err := cm.serveQueries(); err != nil {
		return fmt.Errorf("cluster %s: answering forwarded queries: %w", c.Name(), err)
	}
	mem, err := c.Join(ctx, worker, e.AdminURL(), e.log)
	if err != nil {
		return err
	}
	cm.mu.Lock()
	cm.mem = mem // queries read it from their goroutines
	cm.mu.Unlock()
	if err := cm.reconcile(ctx, false); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	cm.stop = stop
	go cm.run(runCtx)
	return nil
}

// deployment is the prefix of the egress message ids of the next pipeline:
// unique per worker, incarnation and pipeline, because checkpoint ids start
// again from the store's, which may lag the changelog.
func (cm *clusterMode) deployment() string {
	cm.gen++
	inc := "0" // the empty pipeline before the join, which owns nothing
	if mem := cm.membership(); mem != nil {
		inc = mem.Self().Incarnation
	}
	return fmt.Sprintf("%s-%s-%d", cm.worker, inc, cm.gen)
}

func (cm *clusterMode) membership() *cluster.Membership {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.mem
}

// run carries out the plan whenever the membership or the leases change,
// until ctx ends.
func (cm *clusterMode) run(ctx context.Context) {
	defer close(cm.done)
	t := time.NewTicker(replanEvery)
	defer t.Stop()
	for {
		mem := cm.membership()
		force := false
		select {
		case <-ctx.Done():
			return
		case <-mem.Changed():
		case <-t.C:
		case <-cm.reload:
			force = true
		case <-mem.Lost():
			if err := cm.rejoin(ctx, mem); err != nil {
				if ctx.Err() == nil {
					cm.e.fail(err)
				}
				return
			}
			continue
		}
		if err := cm.reconcile(ctx, force); err != nil && ctx.Err() == nil {
			cm.log.Error("carrying out the cluster plan failed; trying again", "err", err)
		}
	}
}

// rejoin stops all work after the membership was lost, and joins again as
// a new incarnation; a worker whose id another process uses stops.
func (cm *clusterMode) rejoin(ctx context.Context, lost *cluster.Membership) error {
	cm.e.stopPipeline()
	cm.log.Warn("membership lost: every key group dropped", "key_groups", len(cm.owned), "err", lost.Err())
	cm.m.lost.Inc()
	cm.setOwned(func(owned map[int]*cluster.Owned) { clear(owned) })
	var dup *cluster.DuplicateWorkerError
	if errors.As(lost.Err(), &dup) {
		return dup
	}
	_ = lost.Leave(ctx)
	mem, err := cm.c.Join(ctx, cm.worker, cm.e.AdminURL(), cm.e.log)
	if err != nil {
		return err
	}
	cm.mu.Lock()
	cm.mem = mem
	cm.mu.Unlock()
	return cm.reconcile(ctx, true)
}

// requestReload asks the driver to restore every owned key group again.
func (cm *clusterMode) requestReload() {
	select {
	case cm.reload <- struct{}{}:
	default:
	}
}

// reconcile carries out the current plan; with force it also restores
// every owned key group again (after a fenced commit, or one of unknown
// outcome: the store may lag the changelog).
func (cm *clusterMode) reconcile(ctx context.Context, force bool) error {
	mem := cm.membership()
	self := mem.Self().Holder()
	table := mem.Table()
	plan := cluster.PlanFor(cm.k, self, table)
	if lost := cluster.TakenOver(cm.heldLeases(), table); len(lost) > 0 {
		cm.log.Warn("key groups were taken over without this worker knowing; restoring what it holds again", "key_groups", lost)
		cm.m.leasesLost.Inc()
		force = true
	}
	var restore []cluster.Lease
	for _, l := range plan.Owned {
		if cm.ownedKG(l.KeyGroup) == nil {
			restore = append(restore, l)
		}
	}
	if !force && len(plan.Acquire) == 0 && len(plan.HandOff) == 0 && len(restore) == 0 {
		return nil
	}
	if !force && cm.started {
		done, err := cm.moveLive(ctx, plan, restore)
		if done {
			return err
		}
		force = true // restore everything from the changelogs
	}
	cm.m.moves.WithLabelValues("rebuild").Inc()
	start := time.Now()
	cm.e.stopPipeline()
	defer func() {
		own := cm.ownership()
		// Before the pipeline runs: its committer publishes too.
		cm.publishEgress(ctx, own.keyGroups())
		// Building creates consumers, which fail while NATS elects a
		// stream's leader: the worker waits that out.
		retry := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}}
		for {
			err := cm.e.buildPipeline(cm.deployment(), own)
			if err == nil {
				break
			}
			d := retry.Next()
			cm.log.Warn("building the pipeline failed; trying again", "err", err, "retry_in", d.Round(time.Millisecond), "attempt", retry.Retries())
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		cm.e.runPipeline()
		cm.started = true
	}()
	if force {
		// Everything held is restored again, with the leases as the table
		// has them: one restored with an older lease would fence the
		// current one.
		restore = slices.Clone(plan.Owned)
		cm.setOwned(func(owned map[int]*cluster.Owned) { clear(owned) })
	}
	// The pipeline is stopped: nothing of the key groups handed off is in
	// flight, and their next owners go on from their last commits.
	for _, l := range plan.HandOff {
		cm.setOwned(func(owned map[int]*cluster.Owned) { delete(owned, l.KeyGroup) })
		cm.release(ctx, l)
	}
	restored, err := cm.restoreAll(ctx, append(restore, cm.acquireAll(ctx, plan.Acquire)...))
	cm.setOwned(func(owned map[int]*cluster.Owned) { maps.Copy(owned, restored) })
	for kg := range restored {
		cm.unsent[kg] = true
	}
	if err != nil {
		return err
	}
	// What is not owned must not be read, fired or swept here.
	for kg := range cm.k {
		if cm.owned[kg] != nil {
			continue
		}
		if err := cm.dropKeyGroup(kg); err != nil {
			return err
		}
	}
	clear(cm.marks)
	clear(cm.sent)
	clear(cm.published)
	cm.pos.reset()
	cm.m.owned.Set(float64(len(cm.owned)))
	cm.log.Info("key groups moved, pipeline rebuilt", "owned", len(cm.owned), "restored", len(restored), "handed_off", len(plan.HandOff),
		"waiting", len(plan.Waiting), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// dropKeyGroup deletes what the store holds of a key group not owned.
func (cm *clusterMode) dropKeyGroup(kg int) error {
	holds, err := cm.e.store.HoldsKeyGroup(kg)
	if err == nil && holds {
		err = cm.e.store.DropKeyGroup(kg)
	}
	return err
}

// heldLeases returns the leases of the owned key groups.
func (cm *clusterMode) heldLeases() []cluster.Lease {
	cm.ownedMu.RLock()
	defer cm.ownedMu.RUnlock()
	held := make([]cluster.Lease, 0, len(cm.owned))
	for _, o := range cm.owned {
		held = append(held, o.Lease())
	}
	return held
}

// release gives up a lease of a key group not processed here; one that
// fails is released again at the next plan, which still hands it off. A
// lease that changed since it was read is no failure: the table was
// behind (this worker's own release, say), and the next plan sees it.
func (cm *clusterMode) release(ctx context.Context, l cluster.Lease) {
	err := cm.c.Release(ctx, l)
	switch {
	case errors.Is(err, cluster.ErrLeaseChanged):
		cm.log.Debug("releasing a key group: its lease changed since the table showed it; planning again", "key_group", l.KeyGroup)
	case err != nil:
		cm.log.Warn("releasing a key group failed; trying again at the next plan", "key_group", l.KeyGroup, "err", err)
	}
}

// acquireAll acquires the planned leases it can; a lease that changed
// meanwhile is left to the next plan.
func (cm *clusterMode) acquireAll(ctx context.Context, planned []cluster.Lease) []cluster.Lease {
	self := cm.membership().Self().Holder()
	var got []cluster.Lease
	for _, l := range planned {
		g, err := cm.c.Acquire(ctx, l.KeyGroup, self, l)
		if err != nil {
			cm.log.Debug("acquiring a key group failed; planning again", "key_group", l.KeyGroup, "err", err)
			continue
		}
		got = append(got, g)
	}
	return got
}

// restoreAll acquires nothing: it restores the key groups of leases held
// into the store, several at a time, and returns them. A key group another
// worker took meanwhile is skipped.
func (cm *clusterMode) restoreAll(ctx context.Context, leases []cluster.Lease) (map[int]*cluster.Owned, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, restoreParallelism)
		errs []error
		out  = map[int]*cluster.Owned{}
	)
	for _, l := range leases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t := time.Now()
			o, st, err := cm.c.Restore(ctx, l, cm.e.store)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, cluster.ErrFenced):
				cm.log.Info("key group taken by another worker while restoring it", "key_group", l.KeyGroup, "err", err)
			case err != nil:
				errs = append(errs, fmt.Errorf("restoring key group %d: %w", l.KeyGroup, err))
			default:
				out[l.KeyGroup] = o
				base := "none"
				switch {
				case st.FromStore:
					base = "store"
				case st.FromSnapshot:
					base = "snapshot"
				}
				cm.m.restores.WithLabelValues(base).Inc()
				cm.m.restoreSeconds.Observe(time.Since(t).Seconds())
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// setOwned changes the owned key groups under ownedMu.
func (cm *clusterMode) setOwned(change func(map[int]*cluster.Owned)) {
	cm.ownedMu.Lock()
	defer cm.ownedMu.Unlock()
	change(cm.owned)
}

// ownership reads where each reader starts for each owned key group.
func (cm *clusterMode) ownership() *ownership {
	own := newOwnership(cm.k)
	for _, r := range cm.e.readerNames() {
		own.start[r] = make([]uint64, cm.k)
	}
	for kg := range cm.owned {
		own.owned[kg] = true
		for r, pos := range own.start {
			p, err := cm.e.store.ReaderPosition(kg, r)
			if err != nil {
				cm.log.Error("reading a key group's reader position failed; reading from the start", "key_group", kg, "reader", r, "err", err)
			}
			pos[kg] = p
			cm.pos.commit(kg, r, p)
		}
	}
	return own
}

// reportLag has the heartbeats carry the readers' lag, for twinflow
// cluster status.
func (cm *clusterMode) reportLag(streams []*twinflowv1.StreamSample) {
	mem := cm.membership()
	if mem == nil {
		return
	}
	lag := make(map[string]uint64, len(streams))
	for _, st := range streams {
		lag[st.GetStream()] = st.GetLag()
	}
	mem.Report(lag)
}

// notOwned says where an address's key group is owned.
func (cm *clusterMode) notOwned(kg int) error {
	mem := cm.membership()
	if mem == nil {
		return fmt.Errorf("key group %d: this worker is joining the cluster: ask again shortly", kg)
	}
	t := mem.Table()
	l := t.Lease(kg)
	if l.Holder.Worker == cm.worker {
		return fmt.Errorf("key group %d is leased to this worker but not processed here yet (being restored, or handed off): ask again shortly", kg)
	}
	if m, ok := t.Members[l.Holder.Worker]; ok && !l.Holder.IsZero() {
		return fmt.Errorf("key group %d is owned by worker %s (%s), not by this one (%s): ask it", kg, l.Holder.Worker, m.Address, cm.worker)
	}
	return fmt.Errorf("key group %d is moving between workers: ask again shortly", kg)
}

// stopDriver stops following the plan, and waits until the driver is
// idle.
func (cm *clusterMode) stopDriver() {
	if cm.stop == nil {
		return
	}
	cm.stop()
	<-cm.done
}

// leave hands every key group back and leaves the cluster, after the final
// checkpoint of a clean stop.
func (cm *clusterMode) leave(ctx context.Context) {
	cm.stopDriver()
	cm.e.stopPipeline()
	for kg, o := range cm.owned {
		if err := cm.c.Release(ctx, o.Lease()); err != nil {
			cm.log.Warn("releasing a key group at the stop failed; the others take it over once this worker has left", "key_group", kg, "err", err)
		}
	}
	cm.setOwned(func(owned map[int]*cluster.Owned) { clear(owned) })
	mem := cm.membership()
	if mem == nil {
		return // stopped while joining
	}
	if err := mem.Leave(ctx); err != nil {
		cm.log.Warn("leaving the cluster failed; the others take over after the member TTL", "err", err)
	}
}

// commit makes a sealed checkpoint durable in cluster mode: each owned key
// group's writes, with the positions, marks and egress of cluster mode, go
// to its changelog in one atomic batch with the messages to key groups
// owned elsewhere; only then to the store, which may lag the changelog
// (a restore catches up) but never lead it. Then the egress is published.
func (cm *clusterMode) commit(ctx context.Context, ck *checkpoint.Commit) error {
	e := cm.e
	pl := e.pl()
	id := ck.Manifest.GetId()
	x := state.NewOverlay() // cluster mode's keys in the owned key groups' ranges
	cm.commits++
	idle := cm.commits%idlePositionEvery == 0
	mv := cm.moveAt(id)

	shardOf := func(kg int) *state.Overlay {
		s := keygroup.ShardOf(kg, cm.k, e.cfg.Shards)
		for i, p := range ck.Parts {
			if p.Shard == s {
				return ck.Overlays[i]
			}
		}
		return nil
	}
	written := map[int]bool{}
	if mv != nil {
		for _, kg := range mv.release {
			written[kg] = true // its last checkpoint here: every position is written
		}
	}
	for kg := range cm.owned {
		if o := shardOf(kg); o != nil {
			for range o.KeyGroup(kg) {
				written[kg] = true
				break
			}
		}
	}

	// Exactly-once egress: kept in the range of an owned key group of the
	// shard that produced it, so that the key group's next owner publishes
	// what this one could not.
	egressKGs := map[int]bool{}
	for _, p := range ck.Parts {
		if len(p.Egress) == 0 {
			continue
		}
		kg, ok := cm.firstOwned(p.Shard, mv)
		if !ok {
			return fmt.Errorf("checkpoint %d: shard %d produced egress but owns no key group", id, p.Shard)
		}
		for _, rec := range p.Egress {
			if err := state.PutKeyGroupEgress(x, kg, rec); err != nil {
				return err
			}
		}
		egressKGs[kg], written[kg] = true, true
	}
	for kg, ids := range cm.published {
		if cm.owned[kg] == nil {
			continue
		}
		for _, msgID := range ids {
			state.DeleteKeyGroupEgress(x, kg, msgID)
		}
		written[kg] = true
	}

	// Messages to key groups owned elsewhere, one message per receiving key
	// group, numbered per sending key group.
	msgs, sent, err := cm.outgoing(ck.Parts, x)
	if err != nil {
		return fmt.Errorf("checkpoint %d: %w", id, err)
	}
	for s := range msgs {
		written[s] = true
	}

	// Marks of the messages received up to the barrier.
	var marks map[[2]int]uint64
	if pl.remote != nil {
		marks = pl.remote.marksAt(id)
	}
	for rs, n := range marks {
		if cm.owned[rs[0]] != nil && n > cm.mark(rs[0], rs[1]) {
			state.PutReceived(x, rs[0], rs[1], n)
			written[rs[0]] = true
		}
	}

	// Reader positions. A reader that went back for a key group that
	// joined reports less than it delivered of the others: their floors;
	// one that stopped a key group's intake delivered nothing of it since:
	// its ceiling.
	pos := map[int]map[string]uint64{}
	for kg := range cm.owned {
		if !written[kg] && !idle {
			continue
		}
		for r, seq := range ck.Manifest.GetReaderSequences() {
			if seq, ok := cm.pos.next(kg, r, seq); ok {
				state.PutReaderPosition(x, kg, r, seq)
				if pos[kg] == nil {
					pos[kg] = map[string]uint64{}
				}
				pos[kg][r] = seq
				written[kg] = true
			}
		}
	}
	x.Freeze()

	var parts []cluster.Part
	for _, kg := range slices.Sorted(maps.Keys(cm.owned)) {
		o := cm.owned[kg]
		if !written[kg] {
			continue
		}
		so := shardOf(kg)
		parts = append(parts, cluster.Part{Owned: o, Messages: msgs[kg], Changes: func(yield func(k, v []byte) bool) {
			if so != nil {
				for k, v := range so.KeyGroup(kg) {
					if !yield(k, v) {
						return
					}
				}
			}
			for k, v := range x.KeyGroup(kg) {
				if !yield(k, v) {
					return
				}
			}
		}})
	}

	if cm.stored != id {
		t := time.Now()
		st, err := cm.commitChangelog(ctx, id, parts)
		if err != nil {
			return err
		}
		cm.stored = id
		cm.m.commits.Inc()
		cm.m.commitSeconds.Observe(time.Since(t).Seconds())
		cm.m.commitBytes.Add(float64(st.Bytes))
		cm.m.commitMessages.Add(float64(st.Messages))
	}

	meta := state.NewOverlay()
	if err := state.PutManifest(meta, ck.Manifest); err != nil {
		return err
	}
	if id > 10 {
		state.DeleteManifest(meta, id-10)
	}
	for _, p := range parts {
		o := p.Owned
		state.PutPosition(meta, o.KeyGroup(), state.Position{Seq: o.Head(), Epoch: o.Epoch()})
	}
	r := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}}
	for {
		_, err := e.store.Commit(append(slices.Clone(ck.Overlays), x), meta)
		if err == nil {
			break
		}
		cm.log.Error("writing the checkpoint to the store failed; it is in the changelog; retrying", "checkpoint", id, "err", err)
		select {
		case <-time.After(r.Next()):
		case <-ctx.Done():
			// The store lags the changelog: restore from it.
			cm.requestReload()
			return errors.Join(err, ctx.Err())
		}
	}
	cm.stored = 0
	for kg, rp := range pos {
		for r, seq := range rp {
			cm.pos.commit(kg, r, seq)
		}
	}
	for rs, n := range marks {
		if n > cm.marks[rs] {
			cm.marks[rs] = n
		}
	}
	for sr, n := range sent {
		cm.sent[sr] = n
	}
	for _, p := range parts {
		delete(cm.published, p.Owned.KeyGroup())
	}
	for kg := range egressKGs {
		cm.unsent[kg] = true
	}
	cm.publishEgress(ctx, nil)
	cm.trimRouted(id)
	if mv != nil {
		cm.applyMove(ctx, mv, ck.Manifest.GetReaderSequences())
	}
	for _, p := range parts {
		if p.Owned.SnapshotDue() {
			cm.queueSnapshot(p.Owned)
		}
	}
	return nil
}

// queueSnapshot asks for a snapshot of an owned key group, off the
// checkpoint path.
func (cm *clusterMode) queueSnapshot(o *cluster.Owned) {
	cm.dueMu.Lock()
	defer cm.dueMu.Unlock()
	if cm.dueQueued[o.KeyGroup()] {
		return
	}
	select {
	case cm.due <- o:
		cm.dueQueued[o.KeyGroup()] = true
	default:
	}
}

// snapshots takes the snapshots asked for, one at a time, until ctx ends:
// a snapshot also compacts the key group's changelog, which bounds what a
// restore reads.
func (cm *clusterMode) snapshots(ctx context.Context) {
	for {
		var o *cluster.Owned
		select {
		case <-ctx.Done():
			return
		case o = <-cm.due:
		}
		cm.dueMu.Lock()
		delete(cm.dueQueued, o.KeyGroup())
		cm.dueMu.Unlock()
		if cm.ownedKG(o.KeyGroup()) != o {
			continue // moved since it was asked for
		}
		t := time.Now()
		info, err := cm.c.Snapshot(ctx, o, cm.e.store)
		if err != nil {
			if ctx.Err() == nil {
				cm.log.Warn("snapshot failed; the changelog keeps growing until the next one", "key_group", o.KeyGroup(), "err", err)
			}
			continue
		}
		cm.m.snapshots.Inc()
		cm.m.snapshotBytes.Add(float64(info.Bytes))
		cm.log.Debug("snapshot taken", "key_group", o.KeyGroup(), "seq", info.Seq, "bytes", info.Bytes, "took", time.Since(t))
	}
}

// commitChangelog writes the parts to their changelogs, retrying what can
// be retried until ctx ends. A fenced commit, or one of unknown outcome,
// asks the driver to restore the key groups again.
func (cm *clusterMode) commitChangelog(ctx context.Context, id uint64, parts []cluster.Part) (cluster.CommitStats, error) {
	r := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}}
	for {
		st, err := cm.c.Commit(ctx, id, parts)
		switch {
		case err == nil:
			return st, nil
		case errors.Is(err, cluster.ErrFenced) || errors.Is(err, cluster.ErrOutcomeUnknown):
			cm.m.fenced.Inc()
			cm.log.Warn("checkpoint refused by the changelog; restoring the key groups again", "checkpoint", id, "err", err)
			cm.requestReload()
			return st, err
		}
		cm.log.Error("writing the checkpoint to the changelog failed; retrying", "checkpoint", id, "err", err)
		select {
		case <-time.After(r.Next()):
		case <-ctx.Done():
			return st, errors.Join(err, ctx.Err())
		}
	}
}

// firstOwned returns the first owned key group of a shard's range,
// preferring one that does not leave with the move mv.
func (cm *clusterMode) firstOwned(s int, mv *move) (int, bool) {
	rg := cm.e.ranges[s]
	leaving, found := 0, false
	for kg := rg.Lo; kg < rg.Hi; kg++ {
		switch {
		case cm.owned[kg] == nil:
		case !mv.leaves(kg):
			return kg, true
		case !found:
			leaving, found = kg, true
		}
	}
	return leaving, found
}

// mark returns the committed high-water mark of key group r for messages
// from s; the committer's.
func (cm *clusterMode) mark(r, s int) uint64 {
	if n, ok := cm.marks[[2]int{r, s}]; ok {
		return n
	}
	n := cm.storedMark(r, s)
	cm.marks[[2]int{r, s}] = n
	return n
}

// storedMark reads the mark from the store; the remote reader's.
func (cm *clusterMode) storedMark(r, s int) uint64 {
	n, err := cm.e.store.Received(r, s)
	if err != nil {
		cm.log.Error("reading a high-water mark failed", "key_group", r, "from", s, "err", err)
	}
	return n
}

func (cm *clusterMode) sentSeq(s, r int) uint64 {
	if n, ok := cm.sent[[2]int{s, r}]; ok {
		return n
	}
	n, err := cm.e.store.Sent(s, r)
	if err != nil {
		cm.log.Error("reading a message sequence failed", "key_group", s, "to", r, "err", err)
	}
	cm.sent[[2]int{s, r}] = n
	return n
}

// outgoing packs the parts' messages to key groups owned elsewhere: for
// each receiving key group one message, holding a numbered batch from each
// sending key group; the sequences go into x. It returns the messages by
// sending key group (the first sender in a message carries it) and the new
// sequences.
func (cm *clusterMode) outgoing(parts []*shard.Part, x *state.Overlay) (map[int][]cluster.Message, map[[2]int]uint64, error) {
	type pair struct{ s, r int }
	groups := map[pair][]shard.Envelope{}
	for _, p := range parts {
		for _, env := range p.Remote {
			s := keygroup.Of(env.Caller.ID, cm.k)
			r := keygroup.Of(env.Target.ID, cm.k)
			if cm.owned[s] == nil {
				return nil, nil, fmt.Errorf("a message from %s to %s: its sender's key group %d is not owned here", env.Caller, env.Target, s)
			}
			groups[pair{s, r}] = append(groups[pair{s, r}], env)
		}
	}
	if len(groups) == 0 {
		return nil, nil, nil
	}
	byReceiver := map[int][]messageBatch{}
	sent := map[[2]int]uint64{}
	for sr, envs := range groups {
		n := cm.sentSeq(sr.s, sr.r) + 1
		sent[[2]int{sr.s, sr.r}] = n
		state.PutSent(x, sr.s, sr.r, n)
		byReceiver[sr.r] = append(byReceiver[sr.r], messageBatch{From: sr.s, Seq: n, Pending: shard.Pendings(envs)})
	}
	out := map[int][]cluster.Message{}
	for r, batches := range byReceiver {
		slices.SortFunc(batches, func(a, b messageBatch) int { return a.From - b.From })
		data, err := encodeMessageBatches(batches)
		if err != nil {
			return nil, nil, err
		}
		// The message travels with the first sender's record; any part of
		// the atomic batch would do.
		s := batches[0].From
		out[s] = append(out[s], cluster.Message{To: r, Header: nats.Header{}, Data: data})
	}
	return out, sent, nil
}

// publishEgress publishes the committed egress of the given key groups and
// of those whose egress may be unpublished, and deletes it from the store;
// the next checkpoint deletes it from the changelog. A record published
// twice (a crash in between) has the same id, and JetStream drops the
// repeat.
func (cm *clusterMode) publishEgress(ctx context.Context, kgs []int) {
	for _, kg := range kgs {
		cm.unsent[kg] = true
	}
	for kg := range cm.unsent {
		if cm.owned[kg] == nil {
			delete(cm.unsent, kg)
			continue
		}
		recs, err := cm.e.store.KeyGroupEgress(kg)
		if err == nil && len(recs) > 0 {
			err = cm.e.pub.Publish(ctx, recs)
		}
		if err == nil && len(recs) > 0 {
			del := state.NewOverlay()
			for _, r := range recs {
				state.DeleteKeyGroupEgress(del, kg, r.GetMsgId())
				cm.published[kg] = append(cm.published[kg], r.GetMsgId())
			}
			err = cm.e.store.WriteNow("delete published egress records", del)
		}
		if err != nil {
			cm.log.Warn("publishing a key group's egress failed; retrying after the next checkpoint", "key_group", kg, "err", err)
			continue
		}
		delete(cm.unsent, kg)
	}
}

// clusterMetrics are cluster mode's Prometheus collectors.
type clusterMetrics struct {
	owned          prometheus.Gauge
	commits        prometheus.Counter
	commitSeconds  prometheus.Histogram
	commitBytes    prometheus.Counter
	commitMessages prometheus.Counter
	fenced         prometheus.Counter
	restores       *prometheus.CounterVec
	restoreSeconds prometheus.Histogram
	lost           prometheus.Counter
	leasesLost     prometheus.Counter
	snapshots      prometheus.Counter
	snapshotBytes  prometheus.Counter
	received       prometheus.Counter
	duplicates     prometheus.Counter
	moves          *prometheus.CounterVec
	routing        *routing.Metrics
}

func newClusterMetrics(reg prometheus.Registerer) *clusterMetrics {
	m := &clusterMetrics{
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "twinflow_cluster_key_groups_owned",
			Help: "Key groups this worker owns."}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_commits_total",
			Help: "Checkpoints written to the key groups' changelogs."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "twinflow_cluster_commit_seconds",
			Help: "Time to write a checkpoint to the changelogs.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		commitBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_commit_bytes_total",
			Help: "Payload bytes of the checkpoints written to the changelogs (compressed records and messages between workers)."}),
		commitMessages: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_commit_messages_total",
			Help: "NATS messages of the checkpoints written to the changelogs."}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_commits_refused_total",
			Help: "Checkpoints refused by the changelog (another owner took a key group) or of unknown outcome."}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinflow_cluster_restores_total",
			Help: "Key groups restored, by base: the store's own copy, a snapshot, or none."}, []string{"base"}),
		restoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "twinflow_cluster_restore_seconds",
			Help: "Time to restore one key group.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_snapshots_total",
			Help: "Snapshots of key groups taken (each compacts the key group's changelog)."}),
		snapshotBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_snapshot_bytes_total",
			Help: "Bytes of the snapshots taken."}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_memberships_lost_total",
			Help: "Times this worker lost its membership (paused or cut off past the member TTL)."}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_leases_lost_total",
			Help: "Times this worker's table showed leases it owned written since it restored them (taken over while it could not see it); each time it rebuilds its pipeline."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_messages_received_total",
			Help: "Messages from key groups owned by other workers, delivered."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinflow_cluster_message_batches_dropped_total",
			Help: "Message batches from other workers at or below the receiver's high-water mark, dropped."}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinflow_cluster_moves_total",
			Help: "Changes of the owned key groups, by how: live (at a checkpoint of the running pipeline), " +
				"failed (a live move whose checkpoint failed, followed by a rebuild) or rebuild (the pipeline stopped and built again)."},
			[]string{"how"}),
	}
	m.routing = routing.NewMetrics(reg)
	reg.MustRegister(m.owned, m.commits, m.commitSeconds, m.commitBytes, m.commitMessages, m.fenced, m.restores,
		m.restoreSeconds, m.lost, m.leasesLost, m.received, m.duplicates, m.snapshots, m.snapshotBytes, m.moves)
	return m
}
