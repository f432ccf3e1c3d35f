// Package cluster is the storage and ownership layer of cluster mode:
// several workers share the key groups of one deployment, with a NATS
// JetStream cluster as the only distributed engine.
//
//   - Assign maps key groups to the live workers (rendezvous hashing with
//     bounded load).
package cluster
