// Package cluster is the storage and ownership layer of cluster mode:
// several workers share the key groups of one deployment, with a NATS
// JetStream cluster (replicated streams, a KV bucket, an object store) as
// the only distributed engine. There is no consensus or membership
// protocol of our own: every decision that must be single is a
// compare-and-set that JetStream checks.
//
// A worker uses it in this order:
//
//   - [Open] the cluster's resources ([Config]: name, key groups K, replicas);
//   - [Cluster.Join] as a member ([WorkerID] keeps its id in its data
//     directory); the [Membership] sends heartbeats, keeps the [Table] of
//     members and leases, and judges the others (detect.go);
//   - [PlanFor] says which key groups to acquire and which to hand off,
//     from [Assign] (rendezvous hashing with bounded load) over the live
//     members;
//   - [Cluster.Acquire] a key group's lease (its epoch is the revision of
//     that write), then [Cluster.Restore] it into the worker's store (from
//     the store's own copy or the latest snapshot, then the changelog),
//     which appends the owner's epoch marker and returns an [Owned];
//   - [Cluster.Commit] each checkpoint of the owned key groups as one
//     atomic batch, fenced: an owner that was taken over is refused with
//     [ErrFenced] by NATS itself;
//   - [Cluster.Snapshot] a key group when [Owned.SnapshotDue], which also
//     compacts its changelog;
//   - [Cluster.Release] a key group after its last checkpoint, and
//     [Membership.Leave].
//
// One job per file: cluster.go (resources), members.go and detect.go
// (membership), assign.go and plan.go (pure: who should own what),
// leases.go and table.go (who owns what), changelog.go (fenced commits),
// record.go (the record format), snapshot.go and restore.go. The design,
// the failure cases and the measurements are in docs/design.md ("Cluster
// mode: the storage and ownership layer") and docs/benchmarks.md.
package cluster
