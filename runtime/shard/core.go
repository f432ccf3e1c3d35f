package shard

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// Endpoint is where a function type is served, with its limits.
type Endpoint struct {
	URL               string
	Timeout           time.Duration
	MaxBatchAddresses int // address batches per call
	MaxBatchMessages  int // invocations per address batch
	MaxInFlight       int // concurrent calls from this shard
}

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
	// EndpointFor returns the endpoint serving a function type.
	EndpointFor func(functionType string) (*Endpoint, bool)
	// Egress resolves an egress record to where it is published.
	Egress *router.Egresses

	MaxAddressQueue int   // queued messages per address before intake pauses
	MaxQueueBytes   int64 // queued message bytes per shard before intake pauses
	// MaxQueued is how many messages a shard queues (inbox and
	// mailboxes) before intake pauses; 0 means DefaultMaxQueued. It bounds
	// the checkpoint pause, which copies the queued messages, while
	// keeping enough queued to fill the next calls.
	MaxQueued       int
	MaxOverlayBytes int64 // uncommitted state bytes before intake pauses and a checkpoint is asked for

	RetryBase     time.Duration // first retry delay
	RetryMax      time.Duration // longest retry delay
	RetryAttempts int           // attempts before a batch is dead-lettered

	TimerScanLimit int // delayed messages fired per key group per tick
}

// DefaultMaxQueued is the default Config.MaxQueued: several rounds of
// full calls (MaxInFlight × MaxBatchAddresses of the spec's defaults) of
// one message per address.
const DefaultMaxQueued = 8192

// Env is how a Core acts on the world. Its methods must not block for long:
// they run inside the shard loop.
type Env interface {
	// Send delivers an item to another shard's inbox.
	Send(shard int, it Item)
	// Call starts a function call; its outcome must come back through
	// Core.Complete on the shard loop.
	Call(c *Call)
	// PublishNow publishes at-least-once egress records to JetStream.
	PublishNow(recs []*storagev1.EgressRecord)
	// Reply publishes an answer to a request's reply subject on core NATS
	// (no stream captures reply subjects).
	Reply(rec *storagev1.EgressRecord)
	// Part hands this shard's finished part of a checkpoint to the
	// coordinator, which calls Core.Committed once it is durable.
	Part(p *Part)
	// SaveSpecs durably records the state specs of a function type.
	SaveSpecs(functionType string, specs []*twinflowv1.StateSpec) error
	// WantCheckpoint asks the coordinator for a checkpoint soon, because the
	// uncommitted state is at its budget.
	WantCheckpoint()
}

// Call is one function call in flight: a request for one endpoint and the
// mailboxes it serves.
type Call struct {
	Endpoint *Endpoint
	Request  *twinflowv1.InvokeRequest
	Started  time.Time
	boxes    []*mailbox
}

// Core is a shard's logic. All methods are called from one goroutine.
type Core struct {
	cfg    Config
	env    Env
	store  *state.Store
	specs  *Specs
	log    *slog.Logger
	m      *Metrics
	rng    *rand.Rand
	nowFn  func() time.Time
	shardL string // shard label for metrics

	overlay    *state.Overlay   // writes since the last snapshot
	committing []*state.Overlay // snapshots handed off, not yet durable, newest first
	v          state.View       // overlay, committing, store; rebuilt when they change
	reader     *state.Reader    // reads addresses through v; nil until needed, closed when v changes
	closing    sync.WaitGroup   // readers being closed

	boxes     map[Address]*mailbox
	ready     map[*Endpoint]*readyQueue // by endpoint; nil for function types no endpoint serves
	queues    []*readyQueue             // the same, in a stable order
	nReady    int                       // mailboxes in the ready queues
	retrying  []*mailbox                // waiting for a retry time
	inflight  map[*Endpoint]int
	queued    int64 // bytes of messages in mailboxes
	nQueued   int   // messages in mailboxes
	overFull  int   // mailboxes over MaxAddressQueue
	egressBuf []*storagev1.EgressRecord

	ckpt       *pendingCheckpoint
	epoch      uint64       // snapshots taken
	mailboxKGs map[int]bool // key groups whose mailbox snapshot is stored

	ticks       int
	sweepCursor []byte // where the sweep of expired values resumes
	// nextDue is when the earliest delayed message is due (Unix ms), or
	// dueUnknown. It may be earlier than the truth (a cancelled timer does
	// not raise it), never later, so a tick before it has nothing to fire.
	nextDue int64

	names map[string]typeNames // by function type

	// Reused by Dispatch.
	calls  []*Call
	picked []*mailbox
	free   []*mailbox // mailboxes to reuse
}

// readyQueue holds the mailboxes that have messages queued and no call in
// flight, for one endpoint, in the order they became ready. Dispatch takes
// from the queues of endpoints below their in-flight limit only, so that a
// saturated endpoint costs nothing per loop turn however many addresses
// wait for it.
type readyQueue struct {
	ep    *Endpoint
	boxes []*mailbox
}

// dueUnknown says that the next due time must be read from the store.
const dueUnknown = math.MinInt64

// mailbox is the work of one address. It exists only while the address has
// messages queued or a call in flight.
type mailbox struct {
	addr     Address
	kg       int
	ep       *Endpoint               // nil when no endpoint serves the function type
	born     uint64                  // Core.epoch when the mailbox was made
	saved    uint64                  // the epoch whose snapshot holds its messages
	queue    []Envelope              // waiting, in arrival order
	inflight []Envelope              // in the current call, or waiting to be retried
	specs    []*twinflowv1.StateSpec // declared when the state was read
	values   map[string]state.Value
	readErr  error // reading the state for the next call failed
	attempts int
	retryAt  time.Time
	isReady  bool
	inCall   bool
}

// NewCore returns a core with empty mailboxes. Restore loads what the last
// checkpoint left.
func NewCore(cfg Config, env Env, store *state.Store, specs *Specs, m *Metrics, log *slog.Logger, now func() time.Time) *Core {
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	c := &Core{
		cfg:        cfg,
		env:        env,
		store:      store,
		specs:      specs,
		log:        log.With("shard", cfg.Index),
		m:          m,
		rng:        rand.New(rand.NewPCG(uint64(now().UnixNano()), uint64(cfg.Index))),
		nowFn:      now,
		shardL:     fmt.Sprint(cfg.Index),
		overlay:    state.NewOverlay(),
		boxes:      make(map[Address]*mailbox),
		ready:      make(map[*Endpoint]*readyQueue),
		inflight:   make(map[*Endpoint]int),
		mailboxKGs: make(map[int]bool),
		nextDue:    dueUnknown,
		names:      make(map[string]typeNames),
	}
	c.layersChanged()
	return c
}

// view reads through the uncommitted layers to Pebble.
func (c *Core) view() state.View { return c.v }

// layersChanged rebuilds the view after the overlay or the committing
// overlays changed, and drops the reader, which saw the old ones.
func (c *Core) layersChanged() {
	layers := make([]*state.Overlay, 0, 1+len(c.committing))
	layers = append(layers, c.overlay)
	layers = append(layers, c.committing...)
	c.v = state.NewView(c.store, layers...)
	c.closeReader()
}

// readValues reads the named values of an address, or all of them when
// names is nil, through the shard's reader: one Pebble iterator serves
// every read until the layers change.
func (c *Core) readValues(kg int, addr Address, names []string, nowMs int64) (map[string]state.Value, [][]byte, error) {
	if c.reader == nil {
		c.reader = c.v.NewReader()
	}
	var (
		vals    map[string]state.Value
		expired [][]byte
		err     error
	)
	if names == nil {
		vals, expired, err = c.reader.ReadAddress(kg, state.Address(addr), nowMs)
	} else {
		vals, expired, err = c.reader.ReadValues(kg, state.Address(addr), names, nowMs)
	}
	if err != nil {
		c.closeReader() // start afresh after an error
	}
	return vals, expired, err
}

// stateNames returns the names of specs, the state a function type
// declares.
func (c *Core) stateNames(functionType string, specs []*twinflowv1.StateSpec) []string {
	if len(specs) == 0 {
		return nil
	}
	// Specs.Of returns the same slice until the specs change.
	if n, ok := c.names[functionType]; ok && len(n.specs) == len(specs) && &n.specs[0] == &specs[0] {
		return n.names
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.GetName()
	}
	c.names[functionType] = typeNames{specs: specs, names: names}
	return names
}

type typeNames struct {
	specs []*twinflowv1.StateSpec
	names []string
}

// Close releases what the core holds in the store. The loop calls it when
// it ends; the store must not be closed before.
func (c *Core) Close() {
	c.closeReader()
	c.closing.Wait()
}

// closeReader drops the reader. Its iterator is closed on another
// goroutine: releasing the last reference to a Pebble version can wait for
// Pebble's own work, and stopped the loop for tens of milliseconds at a
// checkpoint.
func (c *Core) closeReader() {
	r := c.reader
	if r == nil {
		return
	}
	c.reader = nil
	c.closing.Go(func() {
		if err := r.Close(); err != nil {
			c.log.Error("closing state reader", "err", err)
		}
	})
}

// Restore queues the inputs that the last checkpoint recorded in the
// mailboxes of this shard's key groups, so that they are processed again.
func (c *Core) Restore() error {
	for kg := c.cfg.KGLo; kg < c.cfg.KGHi; kg++ {
		mb, err := state.LoadMailbox(c.view(), kg)
		if err != nil {
			return err
		}
		if len(mb.GetPending()) == 0 {
			continue
		}
		c.mailboxKGs[kg] = true
		for _, p := range mb.GetPending() {
			c.enqueue(envelopeFromPending(p))
		}
	}
	return nil
}

// Deliver takes one item from the inbox.
func (c *Core) Deliver(it Item) {
	if it.Barrier != 0 {
		c.barrier(it.Source, it.Barrier)
		return
	}
	c.record(it.Source, &it.Msg)
	c.enqueue(it.Msg)
}

// route sends a message to the shard owning its target.
func (c *Core) route(env Envelope) {
	shard, _ := c.cfg.Locate(env.Target.ID)
	if shard == c.cfg.Index {
		c.enqueue(env)
		return
	}
	c.env.Send(shard, Item{Source: c.cfg.Index, Msg: env})
}

func (c *Core) enqueue(env Envelope) {
	b := c.boxes[env.Target]
	if b == nil {
		_, kg := c.cfg.Locate(env.Target.ID)
		b = c.newMailbox(env.Target, kg)
		c.boxes[env.Target] = b
	}
	c.preserve(b)
	b.queue = append(b.queue, env)
	c.queued += env.size()
	c.nQueued++
	if len(b.queue) == c.cfg.MaxAddressQueue+1 {
		c.overFull++
	}
	c.markReady(b)
}

// newMailbox returns an empty mailbox, reusing a forgotten one.
func (c *Core) newMailbox(addr Address, kg int) *mailbox {
	ep, ok := c.cfg.EndpointFor(addr.Type)
	if !ok {
		ep = nil
	}
	n := len(c.free)
	if n == 0 {
		return &mailbox{addr: addr, kg: kg, ep: ep, born: c.epoch}
	}
	b := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	b.addr, b.kg, b.ep, b.born = addr, kg, ep, c.epoch
	return b
}

// maxFree bounds the mailboxes kept for reuse, and maxFreeQueue the queue
// capacity a kept mailbox may hold on to.
const (
	maxFree      = 4096
	maxFreeQueue = 256
)

// forget drops an idle mailbox, keeping it for reuse.
func (c *Core) forget(b *mailbox) {
	delete(c.boxes, b.addr)
	if len(c.free) >= maxFree || cap(b.queue) > maxFreeQueue || cap(b.inflight) > maxFreeQueue {
		return
	}
	*b = mailbox{queue: b.queue[:0], inflight: b.inflight[:0]}
	c.free = append(c.free, b)
}

func (c *Core) markReady(b *mailbox) {
	if b.isReady || b.inCall || len(b.inflight) > 0 || len(b.queue) == 0 {
		return
	}
	c.pushReady(b)
}

// pushReady appends b to its endpoint's ready queue.
func (c *Core) pushReady(b *mailbox) {
	b.isReady = true
	q := c.ready[b.ep]
	if q == nil {
		q = &readyQueue{ep: b.ep}
		c.ready[b.ep] = q
		c.queues = append(c.queues, q)
	}
	q.boxes = append(q.boxes, b)
	c.nReady++
}

// Dispatch starts calls for the addresses that have work, batching many
// addresses of one endpoint into each call.
//
// It picks the mailboxes in the order they became ready, then reads their
// state in key order, through one iterator: seeking forward costs a fraction
// of seeking at random (BenchmarkReadAddress).
func (c *Core) Dispatch() {
	now := c.nowFn()
	c.dueRetries(now)
	if c.nReady == 0 {
		return
	}
	calls, picked := c.calls[:0], c.picked[:0]
	for _, q := range c.queues {
		if len(q.boxes) == 0 {
			continue
		}
		ep := q.ep
		if ep == nil {
			boxes := q.boxes
			q.boxes = nil
			c.nReady -= len(boxes)
			for _, b := range boxes {
				b.isReady = false
				c.takeBatch(b, 1<<30)
				c.deadLetter(b, fmt.Sprintf("no endpoint serves function type %q", b.addr.Type))
			}
			continue
		}
		for len(q.boxes) > 0 && c.inflight[ep] < ep.MaxInFlight {
			call := &Call{Endpoint: ep}
			c.inflight[ep]++
			calls = append(calls, call)
			n := min(len(q.boxes), max(ep.MaxBatchAddresses, 1))
			for _, b := range q.boxes[:n] {
				b.isReady = false
				if len(b.inflight) == 0 {
					c.takeBatch(b, ep.MaxBatchMessages)
				}
				b.inCall = true
				call.boxes = append(call.boxes, b)
				picked = append(picked, b)
			}
			clear(q.boxes[:n])
			q.boxes = q.boxes[n:]
			c.nReady -= n
		}
	}
	c.readStates(picked, now)
	for _, call := range calls {
		c.buildRequest(call, now)
		if len(call.boxes) == 0 {
			c.inflight[call.Endpoint]--
			continue
		}
		c.start(call, now)
	}
	clear(calls)
	clear(picked)
	c.calls, c.picked = calls[:0], picked[:0]
}

// readStates reads the state of the picked mailboxes whose function type
// declares any, in key order. A failed read is kept in the mailbox.
func (c *Core) readStates(picked []*mailbox, now time.Time) {
	slices.SortFunc(picked, func(x, y *mailbox) int {
		if x.kg != y.kg {
			return x.kg - y.kg
		}
		if n := strings.Compare(x.addr.Type, y.addr.Type); n != 0 {
			return n
		}
		return strings.Compare(x.addr.ID, y.addr.ID)
	})
	nowMs := now.UnixMilli()
	for _, b := range picked {
		// Other shards may register specs meanwhile: the request is built
		// with the specs the state was read for.
		b.specs = c.specs.Of(b.addr.Type)
		b.values, b.readErr = nil, nil
		names := c.stateNames(b.addr.Type, b.specs)
		if len(names) == 0 {
			continue
		}
		vals, expired, err := c.readValues(b.kg, b.addr, names, nowMs)
		if err != nil {
			b.readErr = err
			continue
		}
		for _, k := range expired {
			c.overlay.Delete(k)
		}
		b.values = vals
	}
}

func (c *Core) start(call *Call, now time.Time) {
	call.Started = now
	c.m.batchAddresses.Observe(float64(len(call.boxes)))
	c.env.Call(call)
}

// takeBatch moves up to n queued messages into the in-flight batch.
func (c *Core) takeBatch(b *mailbox, n int) {
	c.preserve(b)
	if n > len(b.queue) {
		n = len(b.queue)
	}
	before := len(b.queue)
	if n == before {
		// All of them: swap the slices rather than copy.
		b.inflight, b.queue = b.queue, b.inflight[:0]
	} else {
		b.inflight = append(b.inflight[:0], b.queue[:n]...)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
	}
	if before > c.cfg.MaxAddressQueue && len(b.queue) <= c.cfg.MaxAddressQueue {
		c.overFull--
	}
}

// buildRequest makes the call's request from its mailboxes' batches and
// states, in a few allocations per call rather than several per message.
// Mailboxes whose state could not be read leave the call to be retried.
func (c *Core) buildRequest(call *Call, now time.Time) {
	boxes := call.boxes
	call.boxes = boxes[:0]
	invocations, states := 0, 0
	for _, b := range boxes {
		if b.readErr != nil {
			continue
		}
		invocations += len(b.inflight)
		states += len(b.specs)
	}
	var (
		batches = make([]twinflowv1.AddressBatch, 0, len(boxes))
		addrs   = make([]twinflowv1.Address, 0, len(boxes))
		invs    = make([]twinflowv1.Invocation, invocations)
		invPtrs = make([]*twinflowv1.Invocation, invocations)
		args    = make([]twinflowv1.TypedValue, invocations)
		svs     = make([]twinflowv1.StateValue, states)
		svPtrs  = make([]*twinflowv1.StateValue, states)
		vals    = make([]twinflowv1.TypedValue, states)
		callers []twinflowv1.Address
	)
	req := &twinflowv1.InvokeRequest{
		ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
		Batches:         make([]*twinflowv1.AddressBatch, 0, len(boxes)),
	}
	for _, b := range boxes {
		if err := b.readErr; err != nil {
			b.readErr = nil
			b.inCall = false
			c.log.Error("reading state failed; retrying", "address", b.addr.String(), "err", err)
			c.scheduleRetry(b, now)
			continue
		}
		addrs = append(addrs, twinflowv1.Address{Type: b.addr.Type, Id: b.addr.ID})
		batches = append(batches, twinflowv1.AddressBatch{Target: &addrs[len(addrs)-1]})
		ab := &batches[len(batches)-1]
		if specs := b.specs; len(specs) > 0 {
			n := len(specs)
			ab.State, svPtrs = svPtrs[:n:n], svPtrs[n:]
			for i, spec := range specs {
				sv := &svs[i]
				sv.Name = spec.GetName()
				if v, ok := b.values[spec.GetName()]; ok {
					vals[i] = twinflowv1.TypedValue{Typename: v.Typename, Value: v.Data}
					sv.Value = &vals[i]
				}
				ab.State[i] = sv
			}
			svs, vals = svs[n:], vals[n:]
		}
		n := len(b.inflight)
		ab.Invocations, invPtrs = invPtrs[:n:n], invPtrs[n:]
		for i := range b.inflight {
			e := &b.inflight[i]
			inv := &invs[i]
			args[i] = twinflowv1.TypedValue{Typename: e.Typename, Value: e.Payload}
			inv.Argument = &args[i]
			inv.ReplyTo = e.ReplyTo
			if e.Caller.Type != "" {
				if callers == nil {
					callers = make([]twinflowv1.Address, 0, invocations)
				}
				callers = append(callers, twinflowv1.Address{Type: e.Caller.Type, Id: e.Caller.ID})
				inv.Caller = &callers[len(callers)-1]
			}
			ab.Invocations[i] = inv
		}
		invs, args = invs[n:], args[n:]
		req.Batches = append(req.Batches, ab)
		call.boxes = append(call.boxes, b)
	}
	clear(boxes[len(call.boxes):])
	call.Request = req
}

// Complete applies the outcome of a call: for each address, its effects,
// its missing state specs, or its failure.
func (c *Core) Complete(call *Call, resp *twinflowv1.InvokeResponse, err error) {
	now := c.nowFn()
	c.inflight[call.Endpoint]--
	c.m.callSeconds.Observe(now.Sub(call.Started).Seconds())
	if err == nil && len(resp.GetResults()) != len(call.boxes) {
		err = connect.NewError(connect.CodeInternal, fmt.Errorf("endpoint returned %d results for %d address batches", len(resp.GetResults()), len(call.boxes)))
	}
	for i, b := range call.boxes {
		b.inCall = false
		if err != nil {
			c.fail(b, callErrorRetryable(err), fmt.Sprintf("call to %s failed: %v", call.Endpoint.URL, err), now)
			continue
		}
		res := resp.GetResults()[i]
		switch o := res.GetOutcome().(type) {
		case *twinflowv1.AddressResult_Effects:
			c.apply(b, o.Effects, now)
		case *twinflowv1.AddressResult_MissingStates:
			c.registerSpecs(b, call.Request.GetBatches()[i], o.MissingStates.GetSpecs(), now)
		case *twinflowv1.AddressResult_Error:
			retry := o.Error.GetKind() != twinflowv1.InvocationError_KIND_TERMINAL
			c.fail(b, retry, fmt.Sprintf("function failed at invocation %d: %s", o.Error.GetInvocationIndex(), o.Error.GetMessage()), now)
		default:
			c.fail(b, true, "endpoint returned an empty result", now)
		}
	}
}

// callErrorRetryable says whether a failed call is worth retrying: transient
// codes (and HTTP 5xx, which Connect maps to them) are; a request the
// endpoint rejects as invalid or unsupported is not.
func callErrorRetryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeUnimplemented,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeNotFound, connect.CodeOutOfRange:
		return false
	}
	return true
}

func (c *Core) apply(b *mailbox, eff *twinflowv1.Effects, now time.Time) {
	nowMs := now.UnixMilli()
	// Latency is measured on the wall clock, as Published is (the time NATS
	// stored the message, or a send's wall time): the injected clock drives
	// state and timers, not metrics.
	wall := time.Now().UnixNano()
	addr := state.Address(b.addr)
	specs := c.specs.Of(b.addr.Type)
	for _, mu := range eff.GetStateMutations() {
		// Values that expire after invoke live on while their address is
		// used; a written one was refreshed by its write.
		delete(b.values, mu.GetName())
		if mu.GetKind() == twinflowv1.StateMutation_KIND_DELETE {
			state.DeleteValue(c.overlay, b.kg, addr, mu.GetName())
			continue
		}
		v := state.Value{Typename: mu.GetValue().GetTypename(), Data: mu.GetValue().GetValue()}
		if s := specByName(specs, mu.GetName()); s != nil {
			v.Expiry = s.GetExpiryMode()
			v.ExpireAfterMillis = s.GetExpireAfterMillis()
		}
		state.PutValue(c.overlay, b.kg, addr, mu.GetName(), v.Refreshed(nowMs))
	}
	state.Touch(c.overlay, b.kg, addr, b.values, nowMs)
	for _, o := range eff.GetOutgoing() {
		c.route(Envelope{
			Target:    Address{Type: o.GetTarget().GetType(), ID: o.GetTarget().GetId()},
			Caller:    b.addr,
			Typename:  o.GetArgument().GetTypename(),
			Payload:   o.GetArgument().GetValue(),
			ReplyTo:   o.GetReplyTo(),
			Published: wall,
		})
	}
	for _, cn := range eff.GetCancellations() {
		c.cancelTimer(b, cn.GetCancellationToken())
	}
	for _, d := range eff.GetDelayed() {
		c.addTimer(b, d, nowMs)
	}
	for _, e := range eff.GetEgress() {
		c.egress(b, e)
	}
	c.m.invocations.Add(float64(len(b.inflight)))
	for i := range b.inflight {
		if p := b.inflight[i].Published; p > 0 {
			c.m.latency.Observe(float64(wall-p) / 1e9)
		}
	}
	c.finishBatch(b)
}

func specByName(specs []*twinflowv1.StateSpec, name string) *twinflowv1.StateSpec {
	for _, s := range specs {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

// finishBatch frees an address for its next batch, and forgets it when it
// has nothing left.
func (c *Core) finishBatch(b *mailbox) {
	c.preserve(b)
	for i := range b.inflight {
		c.queued -= b.inflight[i].size()
	}
	c.nQueued -= len(b.inflight)
	clear(b.inflight)
	b.inflight = b.inflight[:0]
	b.attempts = 0
	b.values, b.specs = nil, nil
	if len(b.queue) == 0 {
		c.forget(b)
		return
	}
	c.markReady(b)
}

func (c *Core) registerSpecs(b *mailbox, sent *twinflowv1.AddressBatch, missing []*twinflowv1.StateSpec, now time.Time) {
	for _, s := range missing {
		for _, st := range sent.GetState() {
			if st.GetName() == s.GetName() {
				c.fail(b, false, fmt.Sprintf("endpoint reports state %q of %s missing although it was sent", s.GetName(), b.addr.Type), now)
				return
			}
		}
	}
	merged, changed := c.specs.Merge(b.addr.Type, missing)
	if changed {
		if err := c.env.SaveSpecs(b.addr.Type, merged); err != nil {
			c.log.Error("recording state specs failed; retrying", "function_type", b.addr.Type, "err", err)
			c.scheduleRetry(b, now)
			return
		}
		c.log.Info("registered state specs", "function_type", b.addr.Type, "specs", len(merged))
	}
	// Send the same batch again, now with the declared state.
	c.pushReady(b)
}

// fail handles a failed batch: retried with backoff, or dead-lettered when
// the failure is terminal or the retries are used up.
func (c *Core) fail(b *mailbox, retryable bool, reason string, now time.Time) {
	if retryable && b.attempts+1 < c.cfg.RetryAttempts {
		b.attempts++
		c.m.retries.Inc()
		c.log.Warn("invocation failed; retrying", "address", b.addr.String(), "attempt", b.attempts, "reason", reason)
		c.scheduleRetry(b, now)
		return
	}
	if retryable {
		reason = fmt.Sprintf("gave up after %d attempts: %s", b.attempts+1, reason)
	}
	c.deadLetter(b, reason)
}

func (c *Core) scheduleRetry(b *mailbox, now time.Time) {
	d := c.cfg.RetryBase << min(b.attempts, 20)
	if d > c.cfg.RetryMax || d <= 0 {
		d = c.cfg.RetryMax
	}
	// Full jitter keeps many failing addresses from retrying in lockstep.
	d = d/2 + time.Duration(c.rng.Int64N(int64(d/2)+1))
	b.retryAt = now.Add(d)
	c.retrying = append(c.retrying, b)
}

func (c *Core) dueRetries(now time.Time) {
	keep := c.retrying[:0]
	for _, b := range c.retrying {
		if now.Before(b.retryAt) {
			keep = append(keep, b)
			continue
		}
		b.retryAt = time.Time{}
		c.pushReady(b)
	}
	clear(c.retrying[len(keep):])
	c.retrying = keep
}

// deadLetter parks an address's in-flight batch on the dead-letter subject
// with the reason, and lets the address go on with its next messages.
func (c *Core) deadLetter(b *mailbox, reason string) {
	c.m.deadLetters.Add(float64(len(b.inflight)))
	c.log.Error("dead-lettering batch", "address", b.addr.String(), "messages", len(b.inflight), "reason", reason)
	for i := range b.inflight {
		e := &b.inflight[i]
		hdr := map[string]string{
			router.ErrorHeader:    reason,
			router.TargetHeader:   b.addr.String(),
			router.TypenameHeader: e.Typename,
		}
		if e.Caller.Type != "" {
			hdr[router.CallerHeader] = e.Caller.String()
		}
		c.buffer(&storagev1.EgressRecord{Subject: DeadLetterSubject, Headers: hdr, Data: e.Payload})
		if e.ReplyTo != "" {
			// A requester would otherwise wait out its timeout: answer
			// with the error instead.
			c.env.Reply(&storagev1.EgressRecord{Subject: e.ReplyTo, Headers: map[string]string{
				router.ErrorHeader: reason, router.TargetHeader: b.addr.String(),
			}})
		}
	}
	c.finishBatch(b)
}

// DeadLetterSubject is where the messages of failed batches go, with the
// router's error, target and caller headers.
const DeadLetterSubject = "twinflow.dlq.function"

func (c *Core) egress(b *mailbox, e *twinflowv1.EgressRecord) {
	subject, hdr, delivery, err := c.cfg.Egress.Resolve(router.EgressRecord{
		Egress:   e.GetEgress(),
		Typename: e.GetValue().GetTypename(),
		Payload:  e.GetValue().GetValue(),
		ReplyTo:  e.GetReplyTo(),
		Key:      e.GetKey(),
		Source:   router.Address(b.addr),
	})
	if err != nil {
		c.m.deadLetters.Inc()
		c.log.Error("egress record rejected", "address", b.addr.String(), "egress", e.GetEgress(), "err", err)
		c.buffer(&storagev1.EgressRecord{Subject: DeadLetterSubject, Data: e.GetValue().GetValue(), Headers: map[string]string{
			router.ErrorHeader: err.Error(), router.SourceHeader: b.addr.String(), router.TypenameHeader: e.GetValue().GetTypename(),
		}})
		return
	}
	rec := &storagev1.EgressRecord{Subject: subject, Data: e.GetValue().GetValue(), Headers: flatten(hdr)}
	c.m.egress.Inc()
	if e.GetEgress() == router.ReplyEgress {
		c.env.Reply(rec)
		return
	}
	if delivery == router.AtLeastOnce {
		c.env.PublishNow([]*storagev1.EgressRecord{rec})
		return
	}
	c.buffer(rec)
}

// buffer holds an exactly-once record until the checkpoint that covers it
// is complete.
func (c *Core) buffer(rec *storagev1.EgressRecord) {
	c.egressBuf = append(c.egressBuf, rec)
}

func flatten(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

// sweepEvery and sweepLimit pace the deletion of expired values that no
// read has come across: a bounded slice of the state every few ticks, so
// the sweep never stalls the loop.
const (
	sweepEvery = 50
	sweepLimit = 512
)

// Tick fires due delayed messages, and now and then deletes some expired
// values.
func (c *Core) Tick() {
	now := c.nowFn()
	c.ticks++
	if c.ticks%sweepEvery == 0 {
		next, err := state.SweepExpired(c.view(), c.overlay, keygroup.Range{Lo: c.cfg.KGLo, Hi: c.cfg.KGHi}, c.sweepCursor, now.UnixMilli(), sweepLimit)
		if err != nil {
			c.log.Error("sweeping expired state failed", "err", err)
		}
		c.sweepCursor = next
	}
	nowMs := now.UnixMilli()
	kgs := keygroup.Range{Lo: c.cfg.KGLo, Hi: c.cfg.KGHi}
	if c.nextDue == dueUnknown {
		due, ok, err := state.NextTimerDue(c.v, kgs)
		switch {
		case err != nil:
			c.log.Error("scanning delayed messages failed", "err", err)
		case ok:
			c.nextDue = due
		default:
			c.nextDue = math.MaxInt64
		}
	}
	if nowMs < c.nextDue {
		return
	}
	type due struct {
		key []byte
		t   *storagev1.Timer
	}
	var fired []due
	err := state.DueTimers(c.v, kgs, nowMs, c.cfg.TimerScanLimit,
		func(key []byte, t *storagev1.Timer) error {
			fired = append(fired, due{bytes.Clone(key), t})
			return nil
		})
	if err != nil {
		c.log.Error("scanning delayed messages failed", "err", err)
	}
	// Unless the limit left due timers behind, the next due time is read
	// again once the fired ones are deleted.
	if err != nil || c.cfg.TimerScanLimit <= 0 || len(fired) < c.cfg.TimerScanLimit {
		c.nextDue = dueUnknown
	}
	for _, d := range fired {
		if err := state.DeleteTimer(c.v, c.overlay, d.key, d.t); err != nil {
			c.log.Error("removing fired delayed message failed", "err", err)
			continue
		}
		c.m.timersFired.Inc()
		t := d.t
		c.route(Envelope{
			Target:    Address{Type: t.GetTarget().GetType(), ID: t.GetTarget().GetId()},
			Caller:    Address{Type: t.GetOwner().GetType(), ID: t.GetOwner().GetId()},
			Typename:  t.GetArgument().GetTypename(),
			Payload:   t.GetArgument().GetValue(),
			ReplyTo:   t.GetReplyTo(),
			Published: time.Now().UnixNano(),
		})
	}
}

func (c *Core) addTimer(b *mailbox, d *twinflowv1.DelayedMessage, nowMs int64) {
	t := &storagev1.Timer{
		Owner:         &twinflowv1.Address{Type: b.addr.Type, Id: b.addr.ID},
		Token:         d.GetCancellationToken(),
		Target:        d.GetTarget(),
		Argument:      d.GetArgument(),
		DueUnixMillis: nowMs + max(d.GetDelayMillis(), 0),
	}
	// A new message with the token of a pending one replaces it.
	if _, err := state.PutTimer(c.v, c.overlay, b.kg, t); err != nil {
		c.log.Error("storing delayed message failed", "address", b.addr.String(), "err", err)
		return
	}
	if c.nextDue != dueUnknown {
		c.nextDue = min(c.nextDue, t.GetDueUnixMillis())
	}
	c.m.timersSet.Inc()
}

func (c *Core) cancelTimer(b *mailbox, token string) {
	ok, err := state.CancelTimer(c.view(), c.overlay, b.kg, state.Address(b.addr), token)
	if err != nil {
		c.log.Error("cancelling delayed message failed", "address", b.addr.String(), "token", token, "err", err)
		return
	}
	if ok { // cancelling a token that is not pending does nothing
		c.m.timersCancelled.Inc()
	}
}

// GetState reads an address's values through the uncommitted layers.
func (c *Core) GetState(addr Address) (map[string]state.Value, error) {
	_, kg := c.cfg.Locate(addr.ID)
	vals, _, err := c.readValues(kg, addr, nil, c.nowFn().UnixMilli())
	return vals, err
}

// Idle reports whether the shard has no work queued or in flight.
func (c *Core) Idle() bool { return len(c.boxes) == 0 }

// Saturated reports whether the shard is at one of its bounds, and which,
// so that intake pauses. inboxBytes and inboxMsgs are what waits in its
// inbox.
func (c *Core) Saturated(inboxBytes, inboxMsgs int64) (bool, string) {
	switch {
	case c.queued+inboxBytes > c.cfg.MaxQueueBytes:
		return true, "queued messages at budget"
	case int64(c.nQueued)+inboxMsgs > int64(c.cfg.MaxQueued):
		return true, "queued messages at their number bound"
	case c.overFull > 0:
		return true, "an address queue is full"
	case c.overlay.Bytes() > c.cfg.MaxOverlayBytes:
		c.env.WantCheckpoint()
		return true, "uncommitted state at budget"
	}
	return false, ""
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
