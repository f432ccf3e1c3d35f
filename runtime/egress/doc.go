// Package egress publishes what functions emit, and what cannot be
// delivered, to NATS. It is the one home of the egress path after
// resolution:
//
//   - Resolving a function's record to a subject, headers and a delivery
//     is pure and lives with routing (router.Egresses), as do the
//     dead-letter subjects (router.DeadLetterSubjects and the others).
//   - Exactly-once records are buffered by the shard that produced them
//     and stored in the checkpoint that covers them (runtime/shard,
//     runtime/checkpoint); [PublishCommitted] publishes them once that
//     checkpoint is durable, in order, with their stable message ids, and
//     forgets them once JetStream has them. After a crash it publishes
//     them again and JetStream drops the repeats.
//   - At-least-once records go out at once through [Publisher.PublishAsync],
//     which never blocks; a checkpoint [Publisher.Flush]es them before it
//     commits the effects that produced them.
//   - A record NATS can never take (larger than its maximum payload) is
//     published as a dead letter on router.EgressDeadLetterSubject, cut to
//     fit, so that it never holds up the records behind it.
//   - Replies to requests go to core NATS ([Publisher.Reply]).
package egress
