package shard

import (
	"errors"
	"fmt"
	"time"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/state"
)

// Complete applies the outcome of a call: for each address, its effects,
// its missing state specs, or its failure.
//
// A call that got no answer (the endpoint could not be reached, timed out,
// or answered 5xx) fails no address: the endpoint is marked unreachable and
// the call's batches wait, with the endpoint probed until it answers. Only
// a call the endpoint rejected for good ([RejectedError]), a function's
// terminal error, an invalid result, or the endpoint's retry limits
// dead-letter a batch.
func (c *Core) Complete(call *Call, resp *twinflowv1.InvokeResponse, err error) {
	now := c.env.Now()
	ep := call.Endpoint
	es := c.endpoint(ep)
	es.inflight--
	c.m.forEndpoint(ep.URL).Observe(now.Sub(call.Started).Seconds())
	if err == nil && len(resp.GetResults()) != len(call.boxes) {
		err = &RejectedError{Err: fmt.Errorf("endpoint returned %d results for %d address batches", len(resp.GetResults()), len(call.boxes))}
	}
	if err != nil {
		var rejected *RejectedError
		if errors.As(err, &rejected) {
			c.callSucceeded(ep, es, now) // it answered
			for _, b := range call.boxes {
				b.inCall = false
				if b.moved {
					continue
				}
				c.deadLetter(b, fmt.Sprintf("endpoint %s rejected the call: %v", ep.URL, err))
			}
			return
		}
		c.callFailed(ep, es, err, now)
		reason := fmt.Sprintf("call to %s failed: %v", ep.URL, err)
		for _, b := range call.boxes {
			b.inCall = false
			if b.moved {
				continue
			}
			if c.countFailure(b, reason, now) {
				c.pushReady(b) // waits for the endpoint's next probe
			}
		}
		return
	}
	c.callSucceeded(ep, es, now)
	for i, b := range call.boxes {
		b.inCall = false
		if b.moved {
			continue // its next owner runs the batch again
		}
		res := resp.GetResults()[i]
		if t := res.GetTarget(); t != nil && (t.GetType() != b.addr.Type || t.GetId() != b.addr.ID) {
			c.deadLetter(b, fmt.Sprintf("invalid result: result %d is for %s/%s, but the batch was for %s", i, t.GetType(), t.GetId(), b.addr))
			continue
		}
		switch o := res.GetOutcome().(type) {
		case *twinflowv1.AddressResult_Effects:
			if why := c.checkEffects(b, o.Effects, now); why != "" {
				c.deadLetter(b, "invalid result: "+why)
				continue
			}
			c.apply(b, o.Effects, now)
		case *twinflowv1.AddressResult_MissingStates:
			c.registerSpecs(b, call.Request.GetBatches()[i], o.MissingStates.GetSpecs(), now)
		case *twinflowv1.AddressResult_Error:
			reason := fmt.Sprintf("function failed at invocation %d: %s", o.Error.GetInvocationIndex(), o.Error.GetMessage())
			if o.Error.GetKind() == twinflowv1.InvocationError_KIND_TERMINAL {
				c.deadLetter(b, reason)
				continue
			}
			c.retryLater(b, reason, now)
		default:
			c.retryLater(b, "endpoint returned an empty result", now)
		}
	}
}

// countFailure counts a failed attempt of b's batch and reports whether it
// may be tried again; if not, the batch is dead-lettered.
func (c *Core) countFailure(b *mailbox, reason string, now time.Time) bool {
	if b.attempts == 0 {
		b.failingSince = now
	}
	b.attempts++
	ep := b.ep
	switch {
	case ep.MaxAttempts > 0 && b.attempts >= ep.MaxAttempts:
		c.deadLetter(b, fmt.Sprintf("gave up after %d attempts: %s", b.attempts, reason))
		return false
	case ep.MaxAge > 0 && now.Sub(b.failingSince) >= ep.MaxAge:
		c.deadLetter(b, fmt.Sprintf("gave up after %d attempts in %s: %s", b.attempts, now.Sub(b.failingSince).Round(time.Millisecond), reason))
		return false
	}
	t := c.typeInfo(b.addr.Type)
	t.retries++
	t.lastRetry = reason
	t.m.retries.Inc()
	return true
}

// retryLater retries b's batch after a backoff, unless its limits are
// reached.
func (c *Core) retryLater(b *mailbox, reason string, now time.Time) {
	if c.countFailure(b, reason, now) {
		c.retryAt(b, now.Add(c.cfg.Retry.Delay(b.attempts-1, c.rng)))
	}
}

// retryAt makes b ready again at t.
func (c *Core) retryAt(b *mailbox, t time.Time) {
	b.retryAt = t
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
		if len(b.inflight) > 0 || b.hasWork() {
			c.pushReady(b)
		} else {
			c.forget(b)
		}
	}
	clear(c.retrying[len(keep):])
	c.retrying = keep
}

func (c *Core) apply(b *mailbox, eff *twinflowv1.Effects, now time.Time) {
	nowMs := now.UnixMilli()
	// Latency is measured on the wall clock, as Published is (the time NATS
	// stored the message, or a send's wall time): the core's clock drives
	// state and timers, not metrics.
	wall := c.env.Wall().UnixNano()
	addr := state.Address(b.addr)
	specs := c.specs.Of(b.addr.Type)
	// The state read for the call says whether the address is in the
	// address index: with no value (of all its type declares) it is not;
	// with some it is, unless the index lost an address since the read
	// (an expired value swept meanwhile), and then the store looks.
	hadState, unindexedSince := len(b.values) > 0, b.indexed != c.store.Unindexed()
	wrote, deleted := false, false
	for _, mu := range eff.GetStateMutations() {
		// Values that expire after invoke live on while their address is
		// used; a written one was refreshed by its write.
		delete(b.values, mu.GetName())
		if mu.GetKind() == twinflowv1.StateMutation_KIND_DELETE {
			c.store.DeleteValue(b.kg, addr, mu.GetName())
			deleted = true
			continue
		}
		wrote = true
		v := state.Value{Typename: mu.GetValue().GetTypename(), Data: mu.GetValue().GetValue()}
		if s := specByName(specs, mu.GetName()); s != nil {
			v.Expiry = s.GetExpiryMode()
			v.ExpireAfterMillis = s.GetExpireAfterMillis()
		}
		c.store.PutValue(b.kg, addr, mu.GetName(), v.Refreshed(nowMs))
	}
	if wrote && (!hadState || unindexedSince) {
		index := c.store.IndexAddress
		if !hadState {
			index = c.store.IndexNewAddress
		}
		if err := index(b.kg, addr); err != nil {
			c.log.Error("adding an address to the address index failed", "address", b.addr.String(), "err", err)
		}
	}
	if deleted {
		if err := c.store.UnindexIfEmpty(b.kg, addr); err != nil {
			c.log.Error("removing an address from the address index failed", "address", b.addr.String(), "err", err)
		}
	}
	c.store.Touch(b.kg, addr, b.values, nowMs)
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
	c.recordApplied(b, eff, time.Unix(0, wall))
	m := c.typeInfo(b.addr.Type).m
	m.invocations.Add(float64(len(b.inflight)))
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

func (c *Core) registerSpecs(b *mailbox, sent *twinflowv1.AddressBatch, missing []*twinflowv1.StateSpec, now time.Time) {
	if why := checkSpecs(missing, sent); why != "" {
		c.deadLetter(b, "invalid result: "+why)
		return
	}
	// The specs are recorded before the registry takes them: until then
	// the batch goes out without them, the function reports them missing
	// again, and that retries the recording.
	if err := c.env.SaveSpecs(b.addr.Type, missing); err != nil {
		c.log.Error("recording state specs failed; retrying", "function_type", b.addr.Type, "err", err)
		c.retryAt(b, now.Add(c.cfg.Retry.Delay(b.attempts, c.rng)))
		return
	}
	if merged, changed := c.specs.Merge(b.addr.Type, missing); changed {
		c.log.Info("registered state specs", "function_type", b.addr.Type, "specs", len(merged))
	}
	// Send the same batch again, now with the declared state.
	c.pushReady(b)
}

// deadLetter parks an address's in-flight batch on the dead-letter subject
// with the reason, and lets the address go on with its next messages.
func (c *Core) deadLetter(b *mailbox, reason string) {
	reason = router.ErrorText(reason)
	c.recordDeadLettered(b, reason)
	t := c.typeInfo(b.addr.Type)
	t.m.deadLetters.Add(float64(len(b.inflight)))
	t.deadLetters += len(b.inflight)
	t.lastDead = reason
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
		c.buffer(&storagev1.EgressRecord{Subject: router.FunctionDeadLetterSubject, Headers: hdr, Data: e.Payload})
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

// egress publishes or buffers a record, or dead-letters it when it has no
// valid destination.
func (c *Core) egress(b *mailbox, e *twinflowv1.EgressRecord) {
	subject, hdr, delivery, err := c.cfg.Egress.Resolve(egressRecord(b, e))
	if err != nil {
		t := c.typeInfo(b.addr.Type)
		t.m.deadLetters.Inc()
		t.deadLetters++
		t.lastDead = err.Error()
		c.buffer(&storagev1.EgressRecord{Subject: router.FunctionDeadLetterSubject, Data: e.GetValue().GetValue(), Headers: map[string]string{
			router.ErrorHeader: router.ErrorText(err.Error()), router.SourceHeader: b.addr.String(), router.TypenameHeader: e.GetValue().GetTypename(),
		}})
		return
	}
	rec := &storagev1.EgressRecord{Subject: subject, Data: e.GetValue().GetValue(), Headers: flatten(hdr)}
	c.m.egress.Inc()
	if e.GetEgress() == router.ReplyEgress {
		c.env.Reply(rec)
		return
	}
	if delivery == router.AtLeastOnce && c.env.PublishNow([]*storagev1.EgressRecord{rec}) {
		return
	}
	// Exactly-once records, and at-least-once ones the publisher cannot
	// take now, go out after the checkpoint that covers them.
	c.buffer(rec)
}

func egressRecord(b *mailbox, e *twinflowv1.EgressRecord) router.EgressRecord {
	return router.EgressRecord{
		Egress:   e.GetEgress(),
		Typename: e.GetValue().GetTypename(),
		Payload:  e.GetValue().GetValue(),
		ReplyTo:  e.GetReplyTo(),
		Key:      e.GetKey(),
		Source:   router.Address(b.addr),
	}
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

// logEvery is how many ticks pass between two logs of the failures of a
// function type: failures are counted and logged together, never one line
// per address.
const logEvery = 500

// logFailures logs and resets the failures counted since the last call.
func (c *Core) logFailures() {
	for ft, t := range c.types {
		if t.retries > 0 {
			c.log.Warn("invocations failed; retrying", "function_type", ft, "failures", t.retries, "last_error", t.lastRetry)
		}
		if t.deadLetters > 0 {
			c.log.Error("messages dead-lettered", "function_type", ft, "messages", t.deadLetters, "last_reason", t.lastDead,
				"subject", router.FunctionDeadLetterSubject)
		}
		t.retries, t.deadLetters, t.lastRetry, t.lastDead = 0, 0, "", ""
	}
}
