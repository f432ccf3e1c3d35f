package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is a cluster as its bucket and changelog stream show it, read
// without any worker: what twinflow cluster status prints.
type Status struct {
	Name      string
	KeyGroups int
	Members   []MemberStatus   // by worker id
	Groups    []KeyGroupStatus // by key group
}

// MemberStatus is one member and what it owns.
type MemberStatus struct {
	Member
	// LastHeartbeat is when the bucket stored its latest heartbeat (the
	// servers' clock).
	LastHeartbeat time.Time
	KeyGroups     []int // whose lease it holds
	Assigned      int   // key groups the assignment gives it
	Draining      bool  // marked drained: it is assigned nothing
	// LastCheckpoint is the newest checkpoint record of its key groups,
	// and when the stream stored it; 0 when it wrote none yet.
	LastCheckpoint   uint64
	LastCheckpointAt time.Time
}

// KeyGroupStatus is one key group: its owner, its changelog and its
// snapshot.
type KeyGroupStatus struct {
	KeyGroup int
	Holder   Holder // zero when the lease is free
	Epoch    uint64
	// Assigned is the worker the assignment gives the key group to: a key
	// group whose holder is another worker is moving.
	Assigned string
	// Head is the changelog's last element: its sequence, kind (epoch
	// marker or checkpoint record), checkpoint and time.
	Head           uint64
	HeadKind       string
	HeadCheckpoint uint64
	HeadAt         time.Time
	Snapshot       SnapshotInfo // zero when there is none
	// Routed is the number of messages in the key group's partitioned
	// ingress: its owner's unread backlog, plus what it processed in the
	// last second or so (trimmed once a second) and the subject's last
	// message, which stays. -1 when the stream is missing.
	Routed int64
}

// Status reads the cluster's status. It reads the bucket through a new
// watch, whose consumer may sit on a replica that has not yet applied a
// write acknowledged just before: such a write (a drain, say) shows within
// a replication round.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	st := Status{Name: c.cfg.Name, KeyGroups: c.k}
	w, err := c.Watch(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return st, err
	}
	t := w.Table()
	w.Stop()

	ids := make([]string, 0, len(t.Members))
	for id := range t.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	assignable := t.Assignable()
	var owners []int
	if len(assignable) > 0 {
		owners = Assign(c.k, assignable)
	}
	routed, err := c.routedCounts(ctx)
	if err != nil {
		return st, err
	}
	byWorker := map[string]*MemberStatus{}
	for _, id := range ids {
		m := MemberStatus{Member: t.Members[id].Member, Draining: t.Draining[id]}
		e, err := c.kv.Get(ctx, memberPrefix+id)
		switch {
		case err == nil:
			m.LastHeartbeat = e.Created()
		case !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted):
			return st, fmt.Errorf("cluster %s: member %s: %w", c.cfg.Name, id, err)
		}
		st.Members = append(st.Members, m)
	}
	for i := range st.Members {
		byWorker[st.Members[i].Worker] = &st.Members[i]
	}
	for kg := range c.k {
		l := t.Lease(kg)
		g := KeyGroupStatus{KeyGroup: kg, Holder: l.Holder}
		if !l.Holder.IsZero() {
			g.Epoch = l.Epoch()
		}
		if owners != nil {
			g.Assigned = assignable[owners[kg]]
			byWorker[g.Assigned].Assigned++
		}
		msg, err := c.log.GetLastMsgForSubject(ctx, c.changelogSubject(kg))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return st, fmt.Errorf("cluster %s: changelog of key group %d: %w", c.cfg.Name, kg, err)
		default:
			g.Head, g.HeadAt, g.HeadKind = msg.Sequence, msg.Time, msg.Header.Get(hdrKind)
			g.HeadCheckpoint, _ = strconv.ParseUint(msg.Header.Get(hdrCheckpoint), 10, 64)
		}
		g.Routed = -1
		if routed != nil {
			g.Routed = int64(routed[c.InSubject(kg)])
		}
		if g.Snapshot, _, err = c.LatestSnapshot(ctx, kg); err != nil {
			return st, err
		}
		if m := byWorker[l.Holder.Worker]; m != nil && m.Incarnation == l.Holder.Incarnation {
			m.KeyGroups = append(m.KeyGroups, kg)
			if g.HeadKind == kindCheckpoint && g.HeadAt.After(m.LastCheckpointAt) {
				m.LastCheckpoint, m.LastCheckpointAt = g.HeadCheckpoint, g.HeadAt
			}
		}
		st.Groups = append(st.Groups, g)
	}
	for i := range st.Members {
		slices.Sort(st.Members[i].KeyGroups)
	}
	return st, nil
}

// routedCounts returns the number of messages on each subject of the
// partitioned ingress, in one request; nil when the stream is missing (a
// cluster of an earlier build).
func (c *Cluster) routedCounts(ctx context.Context) (map[string]uint64, error) {
	in, err := c.js.Stream(ctx, c.InStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err == nil {
		var info *jetstream.StreamInfo
		if info, err = in.Info(ctx, jetstream.WithSubjectFilter(c.InSubject(-1))); err == nil {
			if info.State.Subjects == nil {
				return map[string]uint64{}, nil
			}
			return info.State.Subjects, nil
		}
	}
	return nil, fmt.Errorf("cluster %s: stream %s: %w", c.cfg.Name, c.InStream(), err)
}
