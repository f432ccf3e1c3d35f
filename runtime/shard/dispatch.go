package shard

import (
	"fmt"
	"slices"
	"strings"
	"time"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/state"
)

// Call is one function call in flight: a request for one endpoint and the
// mailboxes it serves.
type Call struct {
	Endpoint *Endpoint
	Request  *twinflowv1.InvokeRequest
	Started  time.Time
	boxes    []*mailbox
}

// Dispatch starts calls for the addresses that have work, batching many
// addresses of one endpoint into each call.
//
// It picks the mailboxes in the order they became ready, then reads their
// state in key order, through one iterator: seeking forward costs a fraction
// of seeking at random (BenchmarkReadAddress).
func (c *Core) Dispatch() {
	now := c.env.Now()
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
				c.takeBatch(b, c.cfg.MaxAddressQueue)
				c.deadLetter(b, fmt.Sprintf("no endpoint serves function type %q", b.addr.Type))
			}
			continue
		}
		es := c.endpoint(ep)
		limit := c.callLimit(ep, es, now)
		for len(q.boxes) > 0 && es.inflight < limit {
			call := &Call{Endpoint: ep}
			es.inflight++
			calls = append(calls, call)
			n := min(len(q.boxes), max(ep.MaxBatchAddresses, 1))
			for _, b := range q.boxes[:n] {
				b.isReady = false
				if len(b.inflight) == 0 {
					c.takeBatch(b, ep.MaxBatchMessages)
				}
				if len(b.inflight) == 0 {
					// The spilled backlog could not be read: try again later.
					c.retryAt(b, now.Add(c.cfg.Retry.Ceiling(0)))
					continue
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
			c.endpoint(call.Endpoint).inflight--
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
		names := c.typeInfo(b.addr.Type).stateNames(b.specs)
		if len(names) == 0 {
			continue
		}
		b.values, b.readErr = c.store.ReadValues(b.kg, state.Address(b.addr), names, nowMs)
		b.indexed = c.store.Unindexed()
	}
}

func (c *Core) start(call *Call, now time.Time) {
	call.Started = now
	c.m.batchAddresses.Observe(float64(len(call.boxes)))
	c.env.Call(call)
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
			c.retryAt(b, now.Add(c.cfg.Retry.Delay(b.attempts, c.rng)))
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

// typeInfo is what a core caches per function type: the names of its
// declared state, and its metrics.
type typeInfo struct {
	specs []*twinflowv1.StateSpec
	names []string
	m     typeMetrics
	// failures since they were last logged
	retries, deadLetters int
	lastRetry, lastDead  string
}

func (c *Core) typeInfo(functionType string) *typeInfo {
	t := c.types[functionType]
	if t == nil {
		t = &typeInfo{m: c.m.forType(functionType)}
		c.types[functionType] = t
	}
	return t
}

// stateNames returns the names of specs, the state a function type
// declares. Specs.Of returns the same slice until the specs change, so the
// names are made once per change.
func (t *typeInfo) stateNames(specs []*twinflowv1.StateSpec) []string {
	if len(specs) == 0 {
		return nil
	}
	if len(t.specs) == len(specs) && &t.specs[0] == &specs[0] {
		return t.names
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.GetName()
	}
	t.specs, t.names = specs, names
	return names
}
