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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Membership
//
// A worker is a member of its cluster while its key member.<worker> exists
// in the cluster bucket. The key carries a per-message TTL (MemberTTL): the
// worker rewrites it every MemberTTL/4, and NATS itself deletes it, leaving
// a marker that watchers see, when the worker stops doing so. Every rewrite
// is a compare-and-set on the key's revision, so a worker whose key expired
// (it was paused or cut off for longer than the TTL) learns it at its next
// heartbeat: the marker changed the revision. It is then no longer a member,
// whatever it believes, and its key groups are being taken over; see
// [Membership.Lost].
//
// A worker's id is stable: it is kept in its data directory (see
// [WorkerID]). A worker that restarts therefore comes back under the same
// id, the assignment gives it back the same key groups, and its local
// store, a cache of their state, needs only the changelog written since.
// Each process is a new incarnation of its worker (a random id made at
// [Cluster.Join]); leases name the incarnation, so that a restarted worker
// takes over its own leases from its dead incarnation at once, without
// waiting for them to expire.

// Member describes a live worker.
type Member struct {
	Worker      string    `json:"worker"`
	Incarnation string    `json:"incarnation"`
	Address     string    `json:"address,omitempty"` // where its admin API answers, for forwarding queries
	Started     time.Time `json:"started"`
}

// Holder returns the lease holder that m is.
func (m Member) Holder() Holder { return Holder{Worker: m.Worker, Incarnation: m.Incarnation} }

// ErrNotMember is the reason [Membership.Lost] gives when the worker's key
// expired or was deleted: the others consider it dead.
var ErrNotMember = errors.New("the worker's membership expired: it missed its heartbeats for longer than the member TTL, " +
	"and its key groups are taken over; rejoin as a new incarnation")

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
// heartbeats until Leave, or until they are refused.
type Membership struct {
	c     *Cluster
	self  Member
	log   *slog.Logger
	stop  context.CancelFunc
	done  chan struct{}
	lostc chan struct{}
	// gate is held around each heartbeat; a test holds it to stop the
	// heartbeats the way a paused process would.
	gate sync.Mutex

	mu struct {
		sync.Mutex
		err error // why the membership was lost
	}
}

// Join makes the worker a member of the cluster as a new incarnation and
// starts its heartbeats. A key left by an earlier incarnation of the same
// worker is taken over at once.
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
	rev, err := c.kv.Create(ctx, key, val, jetstream.KeyTTL(c.cfg.MemberTTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		// An earlier incarnation's key, not yet expired.
		var e jetstream.KeyValueEntry
		if e, err = c.kv.Get(ctx, key); err == nil {
			rev, err = c.heartbeat(ctx, key, val, e.Revision())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: join as %s: %w", c.cfg.Name, worker, err)
	}
	hctx, stop := context.WithCancel(context.Background())
	m := &Membership{
		c: c, self: self, stop: stop,
		log:   log.With("cluster", c.cfg.Name, "worker", worker, "incarnation", self.Incarnation),
		done:  make(chan struct{}),
		lostc: make(chan struct{}),
	}
	go m.run(hctx, key, val, rev)
	m.log.Info("joined the cluster", "member_ttl", c.cfg.MemberTTL)
	return m, nil
}

// heartbeat rewrites the member key with a fresh TTL if its revision is
// still rev, and returns the new revision. The KV API's Update drops a
// key's TTL, so this publishes the KV write itself.
func (c *Cluster) heartbeat(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	msg := &nats.Msg{Subject: "$KV." + c.bucketName() + "." + key, Data: val, Header: nats.Header{}}
	ack, err := c.js.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequencePerSubject(rev),
		jetstream.WithMsgTTL(c.cfg.MemberTTL))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// run sends heartbeats every MemberTTL/4 until stopped or refused.
func (m *Membership) run(ctx context.Context, key string, val []byte, rev uint64) {
	defer close(m.done)
	interval := m.c.cfg.MemberTTL / 4
	t := time.NewTicker(interval)
	defer t.Stop()
	var failingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.gate.Lock()
		hctx, cancel := context.WithTimeout(ctx, interval)
		next, err := m.c.heartbeat(hctx, key, val, rev)
		cancel()
		m.gate.Unlock()
		switch {
		case err == nil:
			if !failingSince.IsZero() {
				m.log.Info("heartbeats resumed", "failed_for", time.Since(failingSince).Round(time.Millisecond))
				failingSince = time.Time{}
			}
			rev = next
		case isWrongLastSequence(err):
			if m.lost(ctx, key, rev) {
				return
			}
		case ctx.Err() != nil:
			return
		default:
			// NATS is unreachable or electing a leader: keep trying. If
			// this lasts past the TTL the key expires, and the next
			// heartbeat that gets through is refused.
			if failingSince.IsZero() {
				failingSince = time.Now()
				m.log.Warn("heartbeat failed; retrying", "err", err)
			}
		}
	}
}

// lost checks, after a heartbeat was refused, whether the key is still
// this incarnation's at revision rev (JetStream also refuses a
// compare-and-set while another write of the key is in flight); if it is
// not, it records why the membership ended, closes Lost and returns true.
func (m *Membership) lost(ctx context.Context, key string, rev uint64) bool {
	reason := ErrNotMember
	gctx, cancel := context.WithTimeout(ctx, m.c.cfg.MemberTTL)
	defer cancel()
	e, err := m.c.kv.Get(gctx, key)
	switch {
	case err == nil && e.Revision() == rev:
		return false
	case err == nil:
		var other Member
		if json.Unmarshal(e.Value(), &other) == nil && other.Incarnation != m.self.Incarnation {
			reason = &DuplicateWorkerError{Worker: m.self.Worker, Other: other}
		}
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
// others need not wait for it to expire. Release the worker's leases first.
func (m *Membership) Leave(ctx context.Context) error {
	m.stop()
	<-m.done
	if m.Err() != nil {
		return nil // the key is gone or another incarnation's
	}
	err := m.c.kv.Delete(ctx, memberPrefix+m.self.Worker)
	if err != nil {
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
