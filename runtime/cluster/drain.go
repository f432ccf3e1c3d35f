package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// drainPrefix marks the workers an operator drains: `drain.<worker>` in
// the bucket, written by Drain and deleted by Undrain. A mark outlives the
// worker's processes, so a drained worker that restarts stays drained
// until it is undrained; a mark of a worker that is not a member does
// nothing.
const drainPrefix = "drain."

// Drain marks worker as drained: the assignment gives it no key group, so
// it hands every one it holds to the others (each with a final checkpoint
// and a release) and then stays a member that owns nothing, until Undrain.
// The worker need not be a member yet.
func (c *Cluster) Drain(ctx context.Context, worker string) error {
	if !keyTokenRE.MatchString(worker) {
		return fmt.Errorf("cluster %s: %q is not a worker id (twinflow cluster status lists them)", c.cfg.Name, worker)
	}
	stamp := time.Now().UTC().Format(time.RFC3339)
	if _, err := c.kv.Put(ctx, drainPrefix+worker, []byte(stamp)); err != nil {
		return fmt.Errorf("cluster %s: draining %s: %w", c.cfg.Name, worker, err)
	}
	return nil
}

// Undrain clears Drain: the assignment counts the worker again.
func (c *Cluster) Undrain(ctx context.Context, worker string) error {
	err := c.kv.Delete(ctx, drainPrefix+worker)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cluster %s: undraining %s: %w", c.cfg.Name, worker, err)
	}
	return nil
}

// Assignable lists, in order, the members the assignment gives key groups
// to: those not drained. When every member is drained, all of them, so
// that the key groups stay owned.
func (t Table) Assignable() []string {
	var ids, all []string
	for id := range t.Members {
		all = append(all, id)
		if !t.Draining[id] {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		ids = all
	}
	sort.Strings(ids)
	return ids
}
