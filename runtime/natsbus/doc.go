// Package natsbus is Twinflow's NATS layer: it runs an embedded NATS server
// with JetStream, connects clients, declares streams, reads streams in order
// from a sequence and publishes records with deduplication.
//
// The package moves bytes. It knows nothing about addresses, routing or
// checkpoints: the ingress readers record the stream sequences that a
// [Reader] returns, and the egress hands [Record] values with stable message
// IDs to a [Publisher].
//
// # Durability
//
// [StartServer] fsyncs every JetStream write by default (the
// "sync_interval: always" setting), so that an acknowledged publish survives
// a power loss. JetStream does not group-commit, so this caps an embedded
// server at a few thousand acknowledged publishes per second on ordinary
// disks; [ServerOptions.SyncInterval] relaxes it. An external NATS server is
// configured by its operator.
//
// # Identities
//
// An embedded server accepts only the [User]s it is started with, each an
// nkey held to its publish and subscribe permissions ([ServerOptions.NoAuth]
// turns that off, for tests and tools that own the server);
// [AuthorizationConfig] renders the same users for an external nats-server.
// [Connect] authenticates with a credentials or nkey seed file, a token or
// a client certificate, and sets the connection's inbox prefix, which a
// server that gives each identity its own lets it read.
//
// # Replies
//
// JetStream does not keep the reply subject of a publish: the reply of a
// publish to a stream is JetStream's acknowledgement. A client that expects
// an answer therefore names its inbox in the [ReplyToHeader] header, and the
// [Reader] returns it as [Msg.Reply]. [Request] does this for a client.
package natsbus
