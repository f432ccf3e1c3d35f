package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Membership
//
// A worker is a member of its cluster while its key member.<worker> exists
// in the cluster bucket. The worker rewrites the key every MemberTTL/4 (a
// heartbeat), each time a compare-and-set on the key's revision; the other
// members delete the key of a worker whose heartbeats stopped (see
// detect.go). A worker whose key was deleted, because it was paused or cut
// off for longer than the TTL, learns it at its next heartbeat: it is then
// no longer a member, whatever it believes, and its key groups are being
// taken over; see [Membership.Lost].
//
// A worker's id is stable: it is kept in its data directory (see
// [WorkerID]). A worker that restarts therefore comes back under the same
// id, the assignment gives it back the same key groups, and its local
// store, a cache of their state, needs only the changelog written since.
// Each process is a new incarnation of its worker (a random id made at
// [Cluster.Join]); leases name the incarnation, so that a restarted worker
// takes over its own leases from its dead incarnation at once, without
// waiting for its old key to be judged dead.

// Member describes a member worker, as its key says.
type Member struct {
	Worker      string    `json:"worker"`
	Incarnation string    `json:"incarnation"`
	Address     string    `json:"address,omitempty"` // where its admin API answers, for forwarding queries
	Started     time.Time `json:"started"`
	// Lag is, by stream, how many messages the worker's readers had not
	// read at its latest heartbeat (Membership.Report).
	Lag map[string]uint64 `json:"lag,omitempty"`
}

// Holder returns the lease holder that m is.
func (m Member) Holder() Holder { return Holder{Worker: m.Worker, Incarnation: m.Incarnation} }

// ErrNotMember is the reason [Membership.Lost] gives when the worker's key
// was deleted: the others judged it dead.
var ErrNotMember = errors.New("the worker is no longer a member: the others saw no heartbeat of it for longer than the member TTL " +
	"and take its key groups over; rejoin as a new incarnation")

// DuplicateWorkerError is the reason [Membership.Lost] gives when another
// process joined with the same worker id: two processes share a data
// directory's id (a copied directory). The one that gets it must stop;
// rejoining would take the id back and forth.
type DuplicateWorkerError struct {
	Worker string
	Other  Member
}

func (e *DuplicateWorkerError) Error() string {
	return fmt.Sprintf("cluster: worker id %s was taken over by another process (incarnation %s, address %q, started %s): "+
		"two workers share one id, probably a copied data directory; give each its own data directory",
		e.Worker, e.Other.Incarnation, e.Other.Address, e.Other.Started.Format(time.RFC3339))
}

// WorkerID returns the worker id kept in dataDir, making one at first use.
func WorkerID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "worker-id")
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if !keyTokenRE.MatchString(id) {
			return "", fmt.Errorf("cluster: %s holds %q, not a worker id; delete the file to make a new one", path, id)
		}
		return id, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("cluster: read worker id: %w", err)
	}
	id := "w-" + randomHex(6)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("cluster: write worker id: %w", err)
	}
	return id, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Membership is a worker's membership of its cluster: it sends the
// heartbeats, keeps the table of members and leases, and judges the other
// members, until Leave or until its own heartbeats are refused.
type Membership struct {
	c     *Cluster
	self  Member
	key   string
	w     *Watcher
	log   *slog.Logger
	stop  context.CancelFunc
	done  chan struct{}
	lostc chan struct{}
	// gate is held around each heartbeat; a test holds it to stop the
	// heartbeats the way a paused process would.
	gate sync.Mutex

	mu struct {
		sync.Mutex
		rev uint64            // of the key's latest heartbeat
		err error             // why the membership was lost
		lag map[string]uint64 // for the next heartbeats
	}
}

// Report sets what the next heartbeats say of the worker's readers: how
// many messages of each stream they have not read yet. twinflow cluster
// status shows it.
func (m *Membership) Report(lag map[string]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.lag = maps.Clone(lag)
}

// value is the member key's value for the next heartbeat.
func (m *Membership) value() ([]byte, error) {
	self := m.self
	m.mu.Lock()
	self.Lag = m.mu.lag
	m.mu.Unlock()
	return json.Marshal(self)
}

// Join makes the worker a member of the cluster as a new incarnation,
// starts its heartbeats and returns once it has read the table. A key left
// by an earlier incarnation of the same worker is taken over at once.
func (c *Cluster) Join(ctx context.Context, worker, address string, log *slog.Logger) (*Membership, error) {
	if !keyTokenRE.MatchString(worker) {
		return nil, fmt.Errorf("cluster %s: worker id %q: use letters, digits, '-' and '_'", c.cfg.Name, worker)
	}
	self := Member{Worker: worker, Incarnation: randomHex(8), Address: address, Started: time.Now().UTC().Truncate(time.Millisecond)}
	val, err := json.Marshal(self)
	if err != nil {
		return nil, err
	}
	key := memberPrefix + worker
	rev, err := c.kv.Create(ctx, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// An earlier incarnation's key.
		var e jetstream.KeyValueEntry
		if e, err = c.kv.Get(ctx, key); err == nil {
			rev, err = c.kv.Update(ctx, key, val, e.Revision())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: join as %s: %w", c.cfg.Name, worker, err)
	}
	log = log.With("cluster", c.cfg.Name, "worker", worker, "incarnation", self.Incarnation)
	w, err := c.Watch(ctx, log)
	if err != nil {
		return nil, err
	}
	hctx, stop := context.WithCancel(context.Background())
	m := &Membership{
		c: c, self: self, key: key, w: w, log: log, stop: stop,
		done:  make(chan struct{}),
		lostc: make(chan struct{}),
	}
	m.mu.rev = rev
	go m.run(hctx)
	m.log.Info("joined the cluster", "member_ttl", c.cfg.MemberTTL)
	return m, nil
}

// run sends heartbeats and judges the others every MemberTTL/4, until
// stopped or refused.
func (m *Membership) run(ctx context.Context) {
	defer close(m.done)
	ttl := m.c.cfg.MemberTTL
	interval := ttl / 4
	t := time.NewTicker(interval)
	defer t.Stop()
	var failingSince time.Time
	resumed := time.Now() // others are judged from when this worker started watching
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		val, err := m.value()
		if err != nil {
			m.log.Error("heartbeat not sent: encoding the member", "err", err)
			continue
		}
		m.gate.Lock()
		rev := m.rev()
		hctx, cancel := context.WithTimeout(ctx, interval)
		next, err := m.c.kv.Update(hctx, m.key, val, rev)
		cancel()
		m.gate.Unlock()
		switch {
		case err == nil:
			if !failingSince.IsZero() {
				m.log.Info("heartbeats resumed", "failed_for", time.Since(failingSince).Round(time.Millisecond))
				failingSince = time.Time{}
			}
			m.mu.Lock()
			m.mu.rev = next
			m.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err):
			if m.lost(ctx) {
				return
			}
		case ctx.Err() != nil:
			return
		default:
			// NATS is unreachable or electing a leader: keep trying. If this
			// lasts past the TTL while the others' heartbeats go on, they
			// delete this worker's key, and the next heartbeat that gets
			// through is refused.
			if failingSince.IsZero() {
				failingSince = time.Now()
				m.log.Warn("heartbeat failed; retrying", "err", err)
			}
		}

		now := time.Now()
		table := m.w.Table()
		own, ok := table.Members[m.self.Worker]
		switch seen := ok && own.Incarnation == m.self.Incarnation && now.Sub(own.Seen) <= ttl/2; {
		case seen && !healthy:
			resumed, healthy = now, true
		case !seen:
			healthy = false
		}
		for _, dead := range suspects(table, m.self.Holder(), now, resumed, ttl) {
			m.declareDead(ctx, dead, now)
		}
	}
}

// declareDead deletes a member's key if it is still at the revision seen.
func (m *Membership) declareDead(ctx context.Context, e MemberEntry, now time.Time) {
	dctx, cancel := context.WithTimeout(ctx, m.c.cfg.MemberTTL/4)
	defer cancel()
	err := m.c.kv.Delete(dctx, memberPrefix+e.Worker, jetstream.LastRevision(e.Revision))
	switch {
	case err == nil:
		m.log.Warn("declared a worker dead: no heartbeat seen for longer than the member TTL",
			"dead_worker", e.Worker, "dead_incarnation", e.Incarnation, "silent_for", now.Sub(e.Seen).Round(time.Millisecond))
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err):
		// It sent a heartbeat meanwhile, or another member declared it dead.
	default:
		m.log.Warn("could not declare a silent worker dead; trying again", "dead_worker", e.Worker, "err", err)
	}
}

func (m *Membership) rev() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.rev
}

// lost checks, after a heartbeat was refused, whether the key is still
// this incarnation's: JetStream also refuses a compare-and-set while
// another write of the key is in flight, and an earlier heartbeat that
// timed out may have been stored after all, moving the revision on. If the
// key is another incarnation's or gone, it records why the membership
// ended, closes Lost and returns true.
func (m *Membership) lost(ctx context.Context) bool {
	reason := ErrNotMember
	gctx, cancel := context.WithTimeout(ctx, m.c.cfg.MemberTTL)
	defer cancel()
	e, err := m.c.kv.Get(gctx, m.key)
	switch {
	case err == nil:
		var cur Member
		if err := json.Unmarshal(e.Value(), &cur); err == nil && cur.Incarnation == m.self.Incarnation {
			m.mu.Lock()
			m.mu.rev = e.Revision()
			m.mu.Unlock()
			return false
		}
		reason = &DuplicateWorkerError{Worker: m.self.Worker, Other: cur}
	case !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted):
		return false // cannot tell: try again at the next heartbeat
	}
	m.mu.Lock()
	m.mu.err = reason
	m.mu.Unlock()
	m.log.Error("membership lost", "err", reason)
	close(m.lostc)
	return true
}

// Self returns the member this worker is.
func (m *Membership) Self() Member { return m.self }

// Table returns the current table of members and leases.
func (m *Membership) Table() Table { return m.w.Table() }

// Changed receives a value after the table changed (see [Watcher.Changed]).
func (m *Membership) Changed() <-chan struct{} { return m.w.Changed() }

// Lost is closed when the heartbeats were refused: the worker is no longer
// a member, and must stop processing every key group it owns at once (its
// writes would be refused anyway, see [ErrFenced]). Err says why.
func (m *Membership) Lost() <-chan struct{} { return m.lostc }

// Err returns why the membership was lost, nil while it is not.
func (m *Membership) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.err
}

// Leave stops the heartbeats and deletes the member key, so that the
// others need not wait to judge the worker dead. Release the worker's
// leases first.
func (m *Membership) Leave(ctx context.Context) error {
	m.stop()
	<-m.done
	m.w.Stop()
	if m.Err() != nil {
		return nil // the key is gone or another incarnation's
	}
	err := m.c.kv.Delete(ctx, m.key, jetstream.LastRevision(m.rev()))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("cluster %s: leave as %s: %w", m.c.cfg.Name, m.self.Worker, err)
	}
	m.log.Info("left the cluster")
	return nil
}

// isWrongLastSequence reports whether err is JetStream refusing a write
// whose expected last sequence (per subject) did not match.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
