package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Table is what a worker knows of its cluster at one moment: the members
// and the state of every lease. Views of different workers agree once the
// same writes have reached them; until then they may differ, which
// compare-and-set on leases and changelogs makes harmless.
type Table struct {
	Members map[string]MemberEntry // by worker id
	Leases  map[int]Lease          // by key group; a key group never leased is absent
	// Draining are the workers marked drained (Drain), members or not.
	Draining map[string]bool
}

// MemberEntry is a member's key as last seen.
type MemberEntry struct {
	Member
	Revision uint64    // of the key: its latest heartbeat
	Seen     time.Time // when this worker saw that heartbeat (its own clock)
}

// Live reports whether h is a live member: its worker is a member with that
// incarnation.
func (t Table) Live(h Holder) bool {
	m, ok := t.Members[h.Worker]
	return ok && m.Incarnation == h.Incarnation
}

// Lease returns key group kg's lease (a zero Lease for kg when it was never
// leased).
func (t Table) Lease(kg int) Lease {
	if l, ok := t.Leases[kg]; ok {
		return l
	}
	return Lease{KeyGroup: kg}
}

func (t Table) clone() Table {
	return Table{Members: maps.Clone(t.Members), Leases: maps.Clone(t.Leases), Draining: maps.Clone(t.Draining)}
}

// Watcher keeps a Table up to date from the cluster bucket.
type Watcher struct {
	w       jetstream.KeyWatcher
	cancel  context.CancelFunc
	log     *slog.Logger
	changed chan struct{}
	done    chan struct{}

	mu struct {
		sync.Mutex
		t Table
	}
}

// Watch starts watching the members and leases of the cluster. It returns
// once the table holds what the bucket held when the watch started. Stop
// the watcher when done.
func (c *Cluster) Watch(ctx context.Context, log *slog.Logger) (*Watcher, error) {
	// The watch lives until Stop, not until ctx ends: nats.go ties the
	// watch's subscription to the context it is given.
	wctx, cancel := context.WithCancel(context.Background())
	kw, err := c.kv.WatchFiltered(wctx, []string{memberPrefix + "*", leasePrefix + "*", drainPrefix + "*"})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cluster %s: watch members, leases and drains: %w", c.cfg.Name, err)
	}
	w := &Watcher{w: kw, cancel: cancel, log: log.With("cluster", c.cfg.Name), changed: make(chan struct{}, 1), done: make(chan struct{})}
	w.mu.t = Table{Members: map[string]MemberEntry{}, Leases: map[int]Lease{}, Draining: map[string]bool{}}
	// Read the initial values: the watcher sends nil after them.
	for {
		select {
		case e := <-kw.Updates():
			if e == nil {
				go w.run()
				return w, nil
			}
			w.apply(e)
		case <-ctx.Done():
			_ = kw.Stop()
			cancel()
			return nil, fmt.Errorf("cluster %s: watch members, leases and drains: %w", c.cfg.Name, ctx.Err())
		}
	}
}

func (w *Watcher) run() {
	defer close(w.done)
	for e := range w.w.Updates() {
		if e == nil {
			continue
		}
		w.apply(e)
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// apply takes one entry of the bucket into the table.
func (w *Watcher) apply(e jetstream.KeyValueEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := e.Key()
	switch {
	case strings.HasPrefix(key, memberPrefix):
		id := strings.TrimPrefix(key, memberPrefix)
		if e.Operation() != jetstream.KeyValuePut {
			delete(w.mu.t.Members, id)
			return
		}
		var m Member
		if err := json.Unmarshal(e.Value(), &m); err != nil || m.Worker != id {
			w.log.Error("member entry ignored: not a member of this worker", "key", key, "value", string(e.Value()), "err", err)
			return
		}
		w.mu.t.Members[id] = MemberEntry{Member: m, Revision: e.Revision(), Seen: time.Now()}
	case strings.HasPrefix(key, drainPrefix):
		id := strings.TrimPrefix(key, drainPrefix)
		if e.Operation() == jetstream.KeyValuePut {
			w.mu.t.Draining[id] = true
		} else {
			delete(w.mu.t.Draining, id)
		}
	case strings.HasPrefix(key, leasePrefix):
		kg, err := strconv.Atoi(strings.TrimPrefix(key, leasePrefix))
		if err != nil {
			w.log.Error("lease entry ignored: not a key group", "key", key)
			return
		}
		l, err := decodeLease(kg, e)
		if err != nil {
			w.log.Error("lease entry ignored", "key", key, "err", err)
			return
		}
		w.mu.t.Leases[kg] = l
	}
}

// Table returns a copy of the current table.
func (w *Watcher) Table() Table {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.t.clone()
}

// Changed receives a value after the table changed; changes that come
// while nobody receives are coalesced into one.
func (w *Watcher) Changed() <-chan struct{} { return w.changed }

// Stop ends the watch.
func (w *Watcher) Stop() {
	_ = w.w.Stop()
	w.cancel()
	<-w.done
}
