package shard

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// Config is what a Core needs to know about its place in the engine.
type Config struct {
	Index     int // this shard's number
	Shards    int // number of shards
	KeyGroups int // K
	KGLo      int // first key group owned
	KGHi      int // one past the last key group owned
	// Sources is the number of barrier sources besides the peer shards:
	// the ingress readers and the checkpoint coordinator. Their source
	// numbers are Shards, Shards+1, ...
	Sources int
	// Locate returns the shard and key group of an id.
	Locate func(id string) (shard, kg int)
	// Owned, in cluster mode, reports whether this worker owns a key
	// group: a message to a key group it does not own is not queued here
	// but handed, with the checkpoint that produced it, to the owner
	// (Part.Remote). Nil means every key group is owned. It is read once,
	// when the core is made; Moves changes the set after.
	Owned func(kg int) bool
	// Moves, in cluster mode, returns the key groups that leave this
	// worker and those that join it at checkpoint id's barrier (live
	// moves, see regroup); nil when key groups never move.
	Moves func(id uint64) (leave, join []int)
	// EndpointFor returns the endpoint serving a function type.
	EndpointFor func(functionType string) (*Endpoint, bool)
	// Egress resolves an egress record to where it is published.
	Egress *router.Egresses

	// MaxAddressQueue bounds the messages of one address held in memory;
	// more of them spill to the store and come back in order.
	MaxAddressQueue int
	// MaxQueueBytes and MaxQueued bound the messages held in memory by the
	// shard (inbox and mailboxes). Past them, the backlogs of failing
	// addresses spill to the store; if that is not enough (the backlog is
	// of addresses that make progress), intake pauses. MaxQueued 0 means
	// DefaultMaxQueued.
	MaxQueueBytes int64
	MaxQueued     int
	// MaxOverlayBytes bounds the state written since the last checkpoint:
	// at it, intake pauses and a checkpoint is asked for.
	MaxOverlayBytes int64
	// MaxSpillBytes bounds the backlog spilled to the store by this shard:
	// at it, intake pauses. 0 means no bound.
	MaxSpillBytes int64

	// Retry paces the retries of an address whose function reported a
	// retryable error; Probe paces the calls to an endpoint that cannot be
	// reached. Zero values take the defaults below.
	Retry backoff.Policy
	Probe backoff.Policy

	// Limits bound what a function's results may hold.
	Limits Limits

	// DedupWindow is how long an address remembers the idempotency key of
	// a message that reached it; 0 means DefaultDedupWindow.
	DedupWindow time.Duration

	TimerScanLimit int // delayed messages fired per key group per tick

	// RecentAddresses bounds the addresses whose recent activity the shard
	// keeps in memory (see Core.Activity); 0 means DefaultRecentAddresses,
	// a negative number keeps none.
	RecentAddresses int
}

// Defaults of Config.
const (
	// DefaultMaxQueued is the default Config.MaxQueued: several rounds of
	// full calls (MaxInFlight × MaxBatchAddresses of the spec's defaults)
	// of one message per address.
	DefaultMaxQueued = 8192
	// DefaultMaxAddressQueue is the default Config.MaxAddressQueue: eight
	// batches of the spec's default size.
	DefaultMaxAddressQueue = 1024
	// DefaultDedupWindow is the default Config.DedupWindow.
	DefaultDedupWindow = 10 * time.Minute
)

// DefaultRetry and DefaultProbe are the default backoff policies. Probes of
// an unreachable endpoint are capped lower than retries of a failing
// function, so that an endpoint that comes back (a redeploy) is used again
// within seconds.
var (
	DefaultRetry = backoff.Policy{Base: 100 * time.Millisecond, Max: 30 * time.Second}
	DefaultProbe = backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}
)

func (cfg *Config) setDefaults() {
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.MaxAddressQueue <= 0 {
		cfg.MaxAddressQueue = DefaultMaxAddressQueue
	}
	if cfg.Retry.Base <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Probe.Base <= 0 {
		cfg.Probe = DefaultProbe
	}
	if cfg.RecentAddresses == 0 {
		cfg.RecentAddresses = DefaultRecentAddresses
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = DefaultDedupWindow
	}
	cfg.Limits.setDefaults()
}

// Env is how a Core acts on the world and learns the time. Its methods must
// not block for long: they run inside the shard loop.
type Env interface {
	// Now is the clock of state expiry, delayed messages and retries.
	Now() time.Time
	// Wall is the wall clock, for latency metrics: a message's publish
	// time is on it.
	Wall() time.Time
	// Send delivers an item to another shard's inbox.
	Send(shard int, it Item)
	// Call starts a function call; its outcome must come back through
	// Core.Complete on the shard loop. A call the endpoint refused for good
	// completes with a [*RejectedError].
	Call(c *Call)
	// PublishNow publishes at-least-once egress records to JetStream. It
	// must not block: when it cannot take the records now it returns
	// false, and the core keeps them for the next checkpoint instead.
	PublishNow(recs []*storagev1.EgressRecord) bool
	// Reply publishes an answer to a request's reply subject on core NATS
	// (no stream captures reply subjects).
	Reply(rec *storagev1.EgressRecord)
	// Part hands this shard's finished part of a checkpoint to the
	// coordinator, which calls Core.Committed once it is durable.
	Part(p *Part)
	// SaveSpecs durably records state specs of a function type, replacing
	// recorded specs of the same name and keeping the others.
	SaveSpecs(functionType string, specs []*twinflowv1.StateSpec) error
	// WantCheckpoint asks the coordinator for a checkpoint soon, because the
	// uncommitted state is at its budget.
	WantCheckpoint()
}

// Core is a shard's logic. All methods are called from one goroutine.
//
// Its work is split by concern: mailboxes and spilled backlogs
// (mailbox.go), calls (dispatch.go), their outcomes, retries and dead
// letters (complete.go), what functions may return (validate.go), delayed
// messages (timers.go), and checkpoints (checkpoint.go).
type Core struct {
	cfg    Config
	env    Env
	store  Store
	specs  *Specs
	log    *slog.Logger
	m      *Metrics
	rng    *rand.Rand
	shardL string // shard label for metrics
	// owned is, in cluster mode, which key groups this worker processes,
	// by key group; nil when it processes all of them.
	owned []bool
	// idle: the shard owns none of its key groups (ownsAny).
	idle bool

	boxes     map[Address]*mailbox
	ready     map[*Endpoint]*readyQueue // by endpoint; nil for function types no endpoint serves
	queues    []*readyQueue             // the same, in a stable order
	nReady    int                       // mailboxes in the ready queues
	retrying  []*mailbox                // waiting for a retry time
	endpoints map[*Endpoint]*endpointState
	queued    int64 // bytes of messages in mailboxes, in memory
	nQueued   int   // messages in mailboxes, in memory
	spilled   int64 // bytes of spilled backlogs
	nSpilled  int   // messages in spilled backlogs
	egressBuf []*storagev1.EgressRecord
	remoteBuf []Envelope // messages to key groups this worker does not own

	ckpt       *pendingCheckpoint
	epoch      uint64       // snapshots taken
	mailboxKGs map[int]bool // key groups whose mailbox snapshot is stored

	ticks       int
	sweepCursor []byte // where the sweep of expired values resumes
	seenCursor  []byte // where the sweep of expired seen keys resumes
	// nextDue is when the earliest delayed message is due (Unix ms), or
	// dueUnknown. It may be earlier than the truth (a cancelled timer does
	// not raise it), never later, so a tick before it has nothing to fire.
	nextDue int64

	types map[string]*typeInfo // by function type

	recent *recent // nil when no activity is kept

	// Reused by Dispatch.
	calls  []*Call
	picked []*mailbox
	free   []*mailbox // mailboxes to reuse
}

// dueUnknown says that the next due time must be read from the store.
const dueUnknown = math.MinInt64

// NewCore returns a core with empty mailboxes. Restore loads what the last
// checkpoint left.
func NewCore(cfg Config, env Env, store Store, specs *Specs, m *Metrics, log *slog.Logger) *Core {
	cfg.setDefaults()
	c := &Core{
		cfg:        cfg,
		env:        env,
		store:      store,
		specs:      specs,
		log:        log.With("shard", cfg.Index),
		m:          m,
		rng:        rand.New(rand.NewPCG(uint64(env.Now().UnixNano()), uint64(cfg.Index))),
		shardL:     fmt.Sprint(cfg.Index),
		boxes:      make(map[Address]*mailbox),
		ready:      make(map[*Endpoint]*readyQueue),
		endpoints:  make(map[*Endpoint]*endpointState),
		mailboxKGs: make(map[int]bool),
		nextDue:    dueUnknown,
		types:      make(map[string]*typeInfo),
	}
	if cfg.RecentAddresses > 0 {
		c.recent = newRecent(cfg.RecentAddresses)
	}
	if cfg.Owned != nil {
		c.owned = make([]bool, cfg.KeyGroups)
		for kg := cfg.KGLo; kg < cfg.KGHi; kg++ {
			c.owned[kg] = cfg.Owned(kg)
		}
	}
	c.idle = !c.ownsAny()
	return c
}

// Close releases what the core holds in the store. The loop calls it when
// it ends; the store must not be closed before.
func (c *Core) Close() { c.store.Close() }

// keyGroups is the range of key groups this shard owns.
func (c *Core) keyGroups() keygroup.Range { return keygroup.Range{Lo: c.cfg.KGLo, Hi: c.cfg.KGHi} }

// owns reports whether the shard processes key group kg: in cluster mode
// only the worker's own. The store may still hold others (a restarted
// worker's cache, before its first plan): their mailboxes, timers and
// expired values are not this worker's to touch.
func (c *Core) owns(kg int) bool { return c.owned == nil || c.owned[kg] }

// ownedRanges returns the runs of consecutive key groups of the shard's
// range that it owns: delayed messages are fired from these only, since
// the store holds, for a while, key groups that are moving in or out.
func (c *Core) ownedRanges() []keygroup.Range {
	if c.owned == nil {
		return []keygroup.Range{c.keyGroups()}
	}
	var out []keygroup.Range
	for kg := c.cfg.KGLo; kg < c.cfg.KGHi; kg++ {
		if !c.owned[kg] {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Hi == kg {
			out[n-1].Hi++
		} else {
			out = append(out, keygroup.Range{Lo: kg, Hi: kg + 1})
		}
	}
	return out
}

// ownsAny reports whether the shard owns one of its key groups. A shard
// that owns some scans its whole range for timers and expired values:
// a worker deletes from its store every key group it does not own before
// it builds a pipeline over the rest. Only its first pipeline, which owns
// nothing, runs over a store that may hold others.
func (c *Core) ownsAny() bool {
	for kg := c.cfg.KGLo; kg < c.cfg.KGHi; kg++ {
		if c.owns(kg) {
			return true
		}
	}
	return false
}

// Deliver takes one item from the inbox.
func (c *Core) Deliver(it Item) {
	if it.Barrier != 0 {
		c.barrier(it.Source, it.Barrier)
		return
	}
	if c.owned != nil {
		if _, kg := c.cfg.Locate(it.Msg.Target.ID); !c.owned[kg] {
			c.notOwned(it)
			return
		}
	}
	if it.Msg.Key != "" && !c.firstSeen(&it.Msg) {
		if it.Msg.ReplyTo != "" {
			// The first request with the key got (or gets) the reply; the
			// repeat is told at once instead of waiting out its timeout.
			c.env.Reply(&storagev1.EgressRecord{Subject: it.Msg.ReplyTo, Headers: map[string]string{
				router.ErrorHeader:       "a message with this idempotency key already reached " + it.Msg.Target.String() + " within the dedup window; it was dropped, and the reply went to the first",
				router.ErrorReasonHeader: string(router.ReasonDuplicate),
				router.TargetHeader:      it.Msg.Target.String(),
			}})
		}
		return
	}
	c.record(it.Source, &it.Msg)
	c.enqueue(it.Msg)
}

// firstSeen reports whether a message with an idempotency key is the first
// with that key to reach its target within the dedup window, and marks it
// seen. The mark is written with the message's arrival, so a checkpoint
// holds both or neither: a message replayed after a restore is not a
// repeat. A read error lets the message through (at-least-once rather than
// lost).
func (c *Core) firstSeen(env *Envelope) bool {
	_, kg := c.cfg.Locate(env.Target.ID)
	addr := state.Address(env.Target)
	now := c.env.Now().UnixMilli()
	seen, err := c.store.Seen(kg, addr, env.Key, now)
	if err != nil {
		c.log.Error("reading the seen keys failed; taking the message as new", "address", env.Target.String(), "err", err)
	}
	if seen {
		c.m.duplicates.Inc()
		return false
	}
	c.store.MarkSeen(kg, addr, env.Key, now+c.cfg.DedupWindow.Milliseconds())
	return true
}

// route sends a message to the shard owning its target.
func (c *Core) route(env Envelope) {
	shard, kg := c.cfg.Locate(env.Target.ID)
	if !c.owns(kg) {
		c.remoteBuf = append(c.remoteBuf, env)
		return
	}
	if shard == c.cfg.Index {
		c.enqueue(env)
		return
	}
	c.env.Send(shard, Item{Source: c.cfg.Index, Msg: env})
}

// GetState reads an address's values through the uncommitted layers.
func (c *Core) GetState(addr Address) (map[string]state.Value, error) {
	_, kg := c.cfg.Locate(addr.ID)
	return c.store.ReadValues(kg, state.Address(addr), nil, c.env.Now().UnixMilli())
}

// Idle reports whether the shard has no work queued, spilled or in flight.
func (c *Core) Idle() bool { return len(c.boxes) == 0 }

// Working reports whether the shard has work that can progress: a call in
// flight, or messages for an address that is not failing; of the given
// key groups only, when some are given.
func (c *Core) Working(kgs ...int) bool {
	for _, b := range c.boxes {
		if (b.inCall || !b.failing()) && (len(kgs) == 0 || slices.Contains(kgs, b.kg)) {
			return true
		}
	}
	return false
}

// Settled reports whether the shard is idle and everything it did is in a
// checkpoint handed off: no uncommitted writes, no buffered egress.
func (c *Core) Settled() bool {
	return c.Idle() && c.store.UncommittedBytes() == 0 && len(c.egressBuf) == 0 && len(c.remoteBuf) == 0
}

// Saturated reports whether intake must pause for this shard, and why.
// inboxBytes and inboxMsgs are what waits in its inbox.
//
// Memory held by the backlogs of failing addresses is first given back by
// spilling them to the store: an address that cannot make progress never
// holds up the others. What remains in memory is the backlog of addresses
// that do make progress, and intake waits for them.
func (c *Core) Saturated(inboxBytes, inboxMsgs int64) (bool, string) {
	if c.overMemory(inboxBytes, inboxMsgs) {
		c.spillFailing(inboxBytes, inboxMsgs)
	}
	switch {
	case c.queued+inboxBytes > c.cfg.MaxQueueBytes:
		return true, "queued messages at their memory budget"
	case int64(c.nQueued)+inboxMsgs > int64(c.cfg.MaxQueued):
		return true, "queued messages at their number bound"
	case c.store.UncommittedBytes() > c.cfg.MaxOverlayBytes:
		c.env.WantCheckpoint()
		return true, "uncommitted state at its memory budget; checkpointing"
	case c.cfg.MaxSpillBytes > 0 && c.spilled > c.cfg.MaxSpillBytes:
		return true, "spilled backlogs at their disk budget"
	}
	return false, ""
}

// overMemory reports whether the messages in memory exceed the shard's
// bounds.
func (c *Core) overMemory(inboxBytes, inboxMsgs int64) bool {
	return c.queued+inboxBytes > c.cfg.MaxQueueBytes || int64(c.nQueued)+inboxMsgs > int64(c.cfg.MaxQueued)
}

// Status is a summary of a shard's health, for readiness and metrics.
type Status struct {
	// Unreachable lists the endpoints whose last call failed, by URL, with
	// when they became unreachable and the last error.
	Unreachable []EndpointDown
	// SpilledBytes and SpilledMessages are the shard's spilled backlog.
	SpilledBytes    int64
	SpilledMessages int
	// Failing is the number of addresses waiting to retry.
	Failing int
}

// EndpointDown describes an endpoint that cannot be reached.
type EndpointDown struct {
	URL       string
	Since     time.Time
	LastError string
}

// Status returns the shard's health summary.
func (c *Core) Status() Status {
	s := Status{SpilledBytes: c.spilled, SpilledMessages: c.nSpilled}
	for ep, es := range c.endpoints {
		if es.down {
			s.Unreachable = append(s.Unreachable, EndpointDown{URL: ep.URL, Since: es.downSince, LastError: es.lastErr})
		}
	}
	for _, b := range c.boxes {
		if b.attempts > 0 {
			s.Failing++
		}
	}
	return s
}

func envelopeFromPending(p *storagev1.Pending) Envelope {
	e := Envelope{
		Target:   Address{Type: p.GetTarget().GetType(), ID: p.GetTarget().GetId()},
		Typename: p.GetArgument().GetTypename(),
		Payload:  p.GetArgument().GetValue(),
		ReplyTo:  p.GetReplyTo(),
	}
	if p.GetCaller() != nil {
		e.Caller = Address{Type: p.GetCaller().GetType(), ID: p.GetCaller().GetId()}
	}
	return e
}
