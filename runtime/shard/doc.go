// Package shard is the engine's event loop: one goroutine per shard owns a
// contiguous range of key groups, the mailboxes of the addresses in them,
// their uncommitted state and their delayed messages.
//
// The logic lives in Core, which does no I/O of its own and reads no clock:
// messages, completions of function calls, barriers and ticks are fed to it,
// and what it wants done (calls to make, messages for other shards, egress
// records, checkpoint parts) goes out through the Env it was given. Loop
// drives a Core from channels. Tests step a Core directly.
package shard
