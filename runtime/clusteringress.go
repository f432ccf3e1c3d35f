package runtime

// The partitioned ingress in cluster mode. The worker that owns key group
// 0 runs the router (runtime/routing), which reads every ingress stream and
// appends its messages, by key group, to the cluster's partitioned ingress
// stream. Every worker reads only the subjects of its key groups, with
// positions per key group like any reader's, and purges them below what its
// key groups committed.

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/routing"
)

// trimRoutedEvery is how often a worker purges the partitioned ingress of
// its key groups: a purge is one request per key group.
const trimRoutedEvery = time.Second

// routedReader builds the reader of the owned key groups' subjects of the
// partitioned ingress, which follows the moves of key groups. The engine's
// pipeline lock is held.
func (cm *clusterMode) routedReader(own *ownership, shards ingress.Shards, source int) (*ingress.Reader, error) {
	e := cm.e
	name := cm.c.InStream()
	kgs := own.keyGroups()
	cm.trimmer = &routedTrimmer{c: cm.c, m: cm.m.routing, log: cm.log, want: map[int]uint64{}, done: map[int]uint64{},
		wake: make(chan struct{}, 1), taken: map[int]uint64{}}
	for _, kg := range kgs {
		cm.trimmer.taken[kg] = own.start[name][kg]
	}
	view := own.clone() // the reader's own: it changes at the barriers that carry moves
	start, err := e.clusterStart(own, name, name)
	if err != nil {
		return nil, err
	}
	bus, err := natsbus.NewReader(context.Background(), e.js, name, start, natsbus.ReaderOptions{Logger: e.log, FilterSubjects: cm.routedFilter(view)})
	if err != nil {
		return nil, err
	}
	cm.inDec = &routing.Decoder{
		K: cm.k, Prefix: strings.TrimSuffix(cm.c.InSubject(-1), "*"), Log: cm.log,
		Accept: func(kg int, seq uint64) bool { return view.accepts(name, kg, seq) },
	}
	atBarrier := func(id, last uint64) (ingress.Seek, bool) {
		m := cm.moveAt(id)
		if m == nil {
			return ingress.Seek{}, false
		}
		from := view.apply(m, name, last)
		return ingress.Seek{After: from, Filter: cm.routedFilter(view)}, true
	}
	r := ingress.New(ingress.Config{Name: name, Source: source, AtBarrier: atBarrier}, bus, start, cm.inDec, shards, nil, e.pub, e.readerMetrics, e.log)
	e.buses = append(e.buses, bus)
	e.reads = append(e.reads, r)
	return r, nil
}

// routingStage returns the router of a worker that owns key group 0.
func (cm *clusterMode) routingStage(o *cluster.Owned) *routing.Stage {
	return routing.New(routing.Config{
		Cluster: cm.c, JS: cm.e.js, Sources: cm.e.routerSources, Router: cm.e.router,
		Holder: o.Lease().Holder.String(), Epoch: o.Epoch(),
		DLQ: cm.e.pub, Metrics: cm.m.routing, Log: cm.log,
	})
}

// trimRouted offers the trimmer, after checkpoint id committed, each owned
// key group's subject below the last message read before the barrier and
// the key group's committed position: both are processed, and the last
// message read stays (the router's next write expects its subject's last).
func (cm *clusterMode) trimRouted(id uint64) {
	if cm.inDec == nil {
		return
	}
	name := cm.c.InStream()
	for kg, seq := range cm.inDec.ReadAt(id) {
		if cm.owned[kg] == nil {
			continue
		}
		if pos := cm.pos.of(kg, name); pos < seq {
			seq = pos
		}
		cm.trimmer.offer(kg, seq)
	}
}

// routedTrimmer purges key groups' subjects of the partitioned ingress, at
// most every trimRoutedEvery, off the checkpoint path.
type routedTrimmer struct {
	c    *cluster.Cluster
	m    *routing.Metrics
	log  *slog.Logger
	mu   sync.Mutex
	want map[int]uint64 // by key group: purge below
	done map[int]uint64
	wake chan struct{}
	// taken holds the committed position of each key group the pipeline
	// took, by starting with it or by a move, and has not purged yet. A
	// key group that takes no new message is never read, so never
	// offered: what its earlier owner processed and did not purge yet is
	// purged once when the pipeline takes it.
	taken map[int]uint64
}

// adopt asks for the one purge of a key group the pipeline took at
// position pos.
func (t *routedTrimmer) adopt(kg int, pos uint64) {
	t.mu.Lock()
	t.taken[kg] = pos
	t.mu.Unlock()
	t.poke()
}

// poke wakes the trimmer.
func (t *routedTrimmer) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// purgeTaken offers the one purge of each key group taken since the last
// call.
func (t *routedTrimmer) purgeTaken(ctx context.Context) {
	t.mu.Lock()
	taken := t.taken
	t.taken = map[int]uint64{}
	t.mu.Unlock()
	for kg, pos := range taken {
		last, err := t.c.LastIn(ctx, kg)
		if err != nil || last == nil {
			continue // trimmed when it is next read
		}
		t.offer(kg, min(last.Sequence, pos)) // the subject's last message stays
	}
}

// offer asks for key group kg's subject to be purged below keep.
func (t *routedTrimmer) offer(kg int, keep uint64) {
	t.mu.Lock()
	if keep > t.want[kg] {
		t.want[kg] = keep
	}
	t.mu.Unlock()
	t.poke()
}

// run purges what is offered until ctx ends.
func (t *routedTrimmer) run(ctx context.Context) {
	if t == nil {
		return
	}
	t.poke() // for the key groups the pipeline started with
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		}
		t.purgeTaken(ctx)
		t.mu.Lock()
		var kgs []int
		keep := map[int]uint64{}
		for kg, seq := range t.want {
			if seq > t.done[kg] {
				kgs = append(kgs, kg)
				keep[kg] = seq
			}
		}
		t.mu.Unlock()
		for _, kg := range kgs {
			if err := t.c.PurgeIn(ctx, kg, keep[kg]); err != nil {
				if ctx.Err() == nil {
					t.log.Warn("trimming a key group's partitioned ingress failed; trying again", "key_group", kg, "below", keep[kg], "err", err)
				}
				continue
			}
			t.done[kg] = keep[kg]
			t.m.Purges.WithLabelValues("routed").Inc()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(trimRoutedEvery):
		}
	}
}
