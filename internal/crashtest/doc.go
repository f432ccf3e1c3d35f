// Package crashtest shows that Twinflow is exactly-once across crashes, in
// the manner of Flink StateFun's smoke test: a seeded random workload runs
// through the real binaries while they are killed, and the final state and
// egress are compared with a model computed from the workload alone.
//
// # Method
//
// The function crash/counter (served by cmd/crashfn) interprets messages
// that are command trees ([Command]): "increment" adds one to the receiving
// address's count, "send" and "sendAfter" pass a sub-command on to another
// address now or later, "sendAfterThenCancel" schedules a delayed increment
// with a cancellation token and cancels it (in the same invocation, or in a
// later one through a message to itself), and "egress" writes a record with
// a unique id to the exactly-once egress "verify". Every command processed
// also adds one to the address's msgs counter.
//
// [Generate] draws commands over many addresses from a seed and, walking
// the same trees, computes what exactly-once processing must produce: the
// final count and msgs of every address and the set of egress ids. A
// cancelled delayed message contributes nothing, so a failed cancel shows
// up as an extra increment and as an egress id that must not exist.
//
// TestCrashRecovery builds cmd/twinflow and cmd/crashfn, starts them as
// separate processes on one data dir, and publishes the commands to the
// direct ingress through JetStream with a message id each, so that the
// driver's own retries (after an acknowledgement lost to a crash) are
// deduplicated. Meanwhile it kills the runtime (and with it its embedded
// NATS server) and the function endpoint with SIGKILL at random moments,
// restarting each after a short random pause. Then it stops the faults,
// waits until the query API shows every address at its model count,
// checks that no address has a delayed message pending (every cancel took
// effect), checks the states again once every delay that was not
// cancelled has passed, and reads the egress stream: every expected id
// exactly once, nothing else, and no dead letters.
//
// The seed fixes the workload and the fault schedule, not the interleaving
// of the processes, which is the point: each run explores different crash
// moments. A failing run prints its seed; -crash.seed=N runs that workload
// again. A failing test prints a digest of each process's log (its first
// data race and panic, its last warnings and errors, its last lines);
// -crash.keep=DIR copies the whole logs there, a directory per run.
//
// The runtime runs with its defaults for the embedded NATS server: every
// JetStream write is fsynced before it is acknowledged. (SIGKILL leaves
// the page cache intact, so the test exercises the recovery of the
// processes, not what a power loss does to writes that were not synced.)
// When the tests run with the race detector, as make test runs them, the
// runtime binary is built with it too, and a race it reports fails the
// test: crashes and restarts reach code paths the in-process tests do not.
// That costs the build a few seconds and the run little, since the run is
// paced by the driver, not by the runtime's speed.
//
// On 2 cores with the race detector a run takes about 50 s: 3000 commands
// (about 11,000 messages, 4,500 egress records) published over 30 s, 5
// runtime and 3 endpoint kills, then the checks.
//
// Nothing in the outcome depends on how fast the machine is. Delayed
// messages run on the wall clock, time down included, and a cancel sent in
// a later invocation waits behind its sender's backlog and the restarts: on
// a loaded machine, repeated kills have kept senders from running such a
// cancel for more than 25 s, and the message then fired first, as the
// platform allows. So those messages are due only after the test
// ([LateCancelDelay]), and what shows that their cancels took effect is
// that none is left pending.
package crashtest
