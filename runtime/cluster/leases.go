package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Leases
//
// Key group kg is owned through the key lease.<kg> of the cluster bucket,
// whose value names the holder: a worker and its incarnation. Every write
// of the key is a compare-and-set on its revision and changes the holder
// (acquire) or clears it (release); nothing renews a lease. A lease is
// alive while its holder is a member (its incarnation's heartbeats go on),
// so one heartbeat per worker keeps all of its leases, instead of a write
// per key group.
//
// The epoch of a lease is the revision of the write that made its holder
// the owner: JetStream numbers the bucket's writes in order, so every change
// of owner has a larger epoch than the one before, with no counter of our
// own. Leases only coordinate who should own what. What keeps a key group's
// history single is the changelog, where every write is a compare-and-set
// too (see changelog.go): an owner that lost its lease without knowing it
// is refused there, by NATS, at its next write.

// Holder is a worker incarnation that holds leases.
type Holder struct {
	Worker      string `json:"worker"`
	Incarnation string `json:"incarnation"`
}

// IsZero reports whether h is no holder (a released lease).
func (h Holder) IsZero() bool { return h == Holder{} }

// String formats h as worker/incarnation.
func (h Holder) String() string { return h.Worker + "/" + h.Incarnation }

// Lease is the state of one key group's lease.
type Lease struct {
	KeyGroup int
	// Holder is the owner; zero when the lease was released, or when the key
	// group was never leased (then Revision is 0 too).
	Holder Holder
	// Revision is the revision of the lease's key: the owner's epoch while
	// there is an owner.
	Revision uint64
}

// Epoch returns the fencing epoch of the lease's owner.
func (l Lease) Epoch() uint64 { return l.Revision }

// ErrLeaseChanged is returned by [Cluster.Acquire] and [Cluster.Release]
// when the lease is no longer at the revision the caller saw: another
// worker acquired or released it first. Read the lease table again and
// plan afresh.
var ErrLeaseChanged = errors.New("the lease changed since it was read; read the lease table again")

// Acquire makes self the holder of key group kg's lease, which must still
// be as seen in seen (its revision; a zero Lease for a key group never
// leased). Acquire does not check that the former holder is dead: [Plan]
// decides when to acquire. The returned lease's epoch is the new owner's;
// restore the key group with it before processing it (see [Cluster.Restore]).
func (c *Cluster) Acquire(ctx context.Context, kg int, self Holder, seen Lease) (Lease, error) {
	if err := c.checkKeyGroup(kg); err != nil {
		return Lease{}, err
	}
	if self.IsZero() {
		return Lease{}, fmt.Errorf("cluster %s: acquire key group %d with no holder", c.cfg.Name, kg)
	}
	rev, err := c.writeLease(ctx, kg, self, seen.Revision)
	if err != nil {
		return Lease{}, fmt.Errorf("cluster %s: acquire key group %d: %w", c.cfg.Name, kg, err)
	}
	return Lease{KeyGroup: kg, Holder: self, Revision: rev}, nil
}

// Release gives up key group kg's lease, which must be held as in held. The
// key group must be finished first: its last checkpoint committed, nothing
// of it left in flight.
func (c *Cluster) Release(ctx context.Context, held Lease) error {
	if _, err := c.writeLease(ctx, held.KeyGroup, Holder{}, held.Revision); err != nil {
		return fmt.Errorf("cluster %s: release key group %d: %w", c.cfg.Name, held.KeyGroup, err)
	}
	return nil
}

// writeLease writes key group kg's lease if its revision is still rev (0:
// the key does not exist, or was deleted).
func (c *Cluster) writeLease(ctx context.Context, kg int, h Holder, rev uint64) (uint64, error) {
	val, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	key := leaseKey(kg)
	var next uint64
	if rev == 0 {
		next, err = c.kv.Create(ctx, key, val)
	} else {
		next, err = c.kv.Update(ctx, key, val, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err) {
		return 0, ErrLeaseChanged
	}
	return next, err
}

// LeaseOf reads key group kg's lease.
func (c *Cluster) LeaseOf(ctx context.Context, kg int) (Lease, error) {
	if err := c.checkKeyGroup(kg); err != nil {
		return Lease{}, err
	}
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) (err error) {
		e, err = c.kv.Get(ctx, leaseKey(kg))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Lease{KeyGroup: kg}, nil
	}
	if err != nil {
		return Lease{}, fmt.Errorf("cluster %s: read the lease of key group %d: %w", c.cfg.Name, kg, err)
	}
	return decodeLease(kg, e)
}

func decodeLease(kg int, e jetstream.KeyValueEntry) (Lease, error) {
	l := Lease{KeyGroup: kg, Revision: e.Revision()}
	if e.Operation() != jetstream.KeyValuePut {
		return Lease{KeyGroup: kg}, nil
	}
	if err := json.Unmarshal(e.Value(), &l.Holder); err != nil {
		return Lease{}, fmt.Errorf("the lease of key group %d is corrupt: %w", kg, err)
	}
	return l, nil
}

func leaseKey(kg int) string { return leasePrefix + strconv.Itoa(kg) }
