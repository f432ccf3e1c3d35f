package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The partitioned ingress
//
// The stream TWINFLOW_<name>_IN holds the ingress messages routed by key
// group: subject twinflow.cluster.<name>.in.<kg> holds key group kg's. One
// writer, the routing stage, appends to each subject with
// Nats-Expected-Last-Subject-Sequence set to the subject's last sequence,
// so a router that another took over from is refused at its next write
// (see runtime/routing). Each worker reads the subjects of its key groups,
// and purges them below what its key groups committed, always keeping a
// subject's last message: the next write expects it.

// InStream returns the name of the stream of the partitioned ingress.
func (c *Cluster) InStream() string { return "TWINFLOW_" + c.cfg.Name + "_IN" }

// InSubject returns the subject of key group kg's routed ingress, or the
// wildcard of all key groups when kg < 0.
func (c *Cluster) InSubject(kg int) string {
	p := "twinflow.cluster." + c.cfg.Name + ".in."
	if kg < 0 {
		return p + "*"
	}
	return p + strconv.Itoa(kg)
}

// openIn creates the stream of the partitioned ingress, or checks and
// reuses it.
func (c *Cluster) openIn(ctx context.Context) error {
	var err error
	c.in, err = c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.InStream(),
		Description: "Twinflow cluster " + c.cfg.Name + ": ingress messages routed by key group",
		Subjects:    []string{c.InSubject(-1)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.cfg.Replicas,
		// A router's epoch markers are one atomic batch.
		AllowAtomicPublish: true,
		// No direct gets: the last message of a subject decides whether a
		// write was refused, and only the leader's answer is current.
		AllowDirect: false,
	})
	if err != nil {
		return fmt.Errorf("cluster %s: stream %s: %w", c.cfg.Name, c.InStream(), placementHint(err, c.cfg.Replicas))
	}
	return nil
}

// LastIn returns the last message of key group kg's routed ingress, read
// from the stream's leader; nil when the subject holds none.
func (c *Cluster) LastIn(ctx context.Context, kg int) (*jetstream.RawStreamMsg, error) {
	if err := c.checkKeyGroup(kg); err != nil {
		return nil, err
	}
	var m *jetstream.RawStreamMsg
	err := retry(ctx, func(ctx context.Context) (err error) {
		m, err = c.in.GetLastMsgForSubject(ctx, c.InSubject(kg))
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read the last message of %s: %w", c.cfg.Name, c.InSubject(kg), err)
	}
	return m, nil
}

// AppendIn appends msgs, each on its key group's subject, as one atomic
// batch: message i, for each i in expect, expects its subject's last
// sequence to be expect[i]. It returns the sequence of each message. A
// refused expectation refuses the whole batch; one attempt, whose error may
// leave the outcome unknown.
func (c *Cluster) AppendIn(ctx context.Context, msgs []*nats.Msg, expect map[int]uint64) ([]uint64, error) {
	if len(msgs) == 0 || len(msgs) > maxBatch {
		return nil, fmt.Errorf("cluster %s: an atomic batch of %d messages: 1 to %d", c.cfg.Name, len(msgs), maxBatch)
	}
	first := make([]int, 0, len(expect))
	heads := make([]uint64, 0, len(expect))
	for i, seq := range expect {
		first, heads = append(first, i), append(heads, seq)
	}
	actx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	last, err := c.publishBatch(actx, msgs, first, heads)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, len(msgs))
	for i := range seqs {
		seqs[i] = last - uint64(len(msgs)-1-i)
	}
	return seqs, nil
}

// PurgeIn deletes the messages of key group kg's routed ingress below
// sequence keep (keep and later stay).
func (c *Cluster) PurgeIn(ctx context.Context, kg int, keep uint64) error {
	actx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return c.in.Purge(actx, jetstream.WithPurgeSubject(c.InSubject(kg)), jetstream.WithPurgeSequence(keep))
}
