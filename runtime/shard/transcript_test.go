package shard

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// TestTranscripts runs the transcripts in testdata/: each file steps a
// fresh shard core, command by command, and compares what the core did with
// what the file expects. After a deliberate change of behaviour, regenerate
// the expectations with
//
//	go test ./runtime/shard -run TestTranscripts -rewrite
//
// and read the diff before committing it.
//
// The core is shard 0 of two, over four key groups (two each). Ids that
// start with "remote" belong to shard 1, which the transcript plays: what
// the core sends there is printed, and `deliver from=peer` delivers what
// it sends back. Time starts at +0s and moves only with `advance` (and
// `next-dispatch`), so backoff jitter, drawn from a generator seeded with
// the clock, is the same on every run.
//
// Commands (arguments in brackets are optional):
//
//	config [max-address-queue=N] [max-queued=N] [max-queue-bytes=N]
//	       [max-overlay-bytes=N] [max-spill-bytes=N] [retry=(base,max)]
//	       [probe=(base,max)] [max-payload=N] [max-delay=D] [max-token=N]
//	  endpoint <function type> [url=U] [batch-addresses=N] [batch-messages=N]
//	           [in-flight=N] [max-attempts=N] [max-age=D]
//	  egress <name> <subject> [at-least-once]
//	    Builds the core. Endpoints with the same url are one endpoint.
//	specs <function type>
//	  <name> [typename=T] [expire-after-write=D | expire-after-invoke=D]
//	    Declares state, as if an earlier run had registered it.
//	deliver [from=reader|peer|coord]
//	  <address> <payload> [typename=T] [reply-to=S] [caller=A] [key=K] [bytes=N]
//	    Delivers messages, from the reader unless told; bytes=N makes a
//	    payload of N bytes; key=K is the idempotency key. An address is
//	    "namespace/name/id".
//	dispatch
//	    Starts calls and prints them, numbered.
//	next-dispatch [step=D] [limit=D]
//	    Advances the clock by step until a call starts, and prints when.
//	complete call=N [unreachable | rejected]
//	  <address> ok [as=A] | retryable M... [at=I] | terminal M... [at=I] |
//	            missing-state | empty | omit
//	    set <name> <value> [typename=T] [bytes=N]
//	    delete <name>
//	    send <address> <payload> [typename=T] [reply-to=S] [bytes=N]
//	    send-after <delay> <address> <payload> [token=T] [typename=T] [bytes=N]
//	    cancel <token>
//	    egress <name> <payload> [key=K] [typename=T]
//	    reply <subject> <payload> [typename=T]
//	    spec <name> [typename=T] [expire-after-write=D]
//	    Answers a call; the lines after an address are its effects (or the
//	    specs it reports missing). `omit` leaves the address's result out.
//	    With unreachable or rejected the call fails as a whole, and the
//	    input, if any, is the error.
//	tick
//	advance <duration>
//	barrier id=N from=(peer,reader,coord)
//	commit
//	    Commits the parts handed off, as the coordinator does, and prints
//	    what it publishes.
//	crash
//	restore
//	state <address>
//	mailboxes
//	timers
//	status
//	saturated [inbox-bytes=N] [inbox-msgs=N]
//	publisher full|ok
//	fail take-spilled|save-specs
//	    The next read of a spilled backlog, or save of state specs, fails.
//
// Every command also prints what the core did meanwhile: messages sent to
// the peer, replies, egress published at once, records buffered for the
// next checkpoint (dead letters among them), parts handed off, changes of
// the spilled backlog, and requests for a checkpoint.
func TestTranscripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		tr := newTranscript(t)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return tr.handle(t, d)
		})
	})
}

// Sources of items, as the core numbers them: itself, the peer shard, then
// Config.Sources others (an ingress reader and the coordinator).
const (
	trSelf = iota
	trPeer
	trReader
	trCoord
)

var trSources = map[string]int{"peer": trPeer, "reader": trReader, "coord": trCoord}

const (
	trKeyGroups   = 4
	trTypename    = "t/msg"    // of messages, unless given
	trValueType   = "t/string" // of state values of undeclared typename, unless given
	trPeerIDStart = "remote"
)

// transcript is the world of one transcript file: a store that outlives
// crashes, the core of the moment, and what the core asked of the world.
type transcript struct {
	t     *testing.T
	start time.Time
	now   time.Time
	store *state.Store
	cfg   Config

	core   *Core
	layers *state.Layers
	faults *faultStore
	specs  *Specs

	out     strings.Builder // what happened since the command began
	calls   map[int]*Call   // started and not completed
	callIDs int
	parts   []*Part // handed off, not committed
	refuse  bool    // the publisher takes nothing now
	noSpecs int     // saves of state specs left to fail
	printed map[*storagev1.EgressRecord]bool
	spilled int // messages spilled, as last printed
}

func newTranscript(t *testing.T) *transcript {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := &transcript{t: t, start: start, now: start, store: memStore(t, trKeyGroups)}
	t.Cleanup(func() {
		if tr.core != nil {
			tr.core.Close()
		}
	})
	return tr
}

func (tr *transcript) handle(t *testing.T, d *datadriven.TestData) string {
	tr.out.Reset()
	if tr.core == nil && d.Cmd != "config" && d.Cmd != "restore" {
		d.Fatalf(t, "%s: no core; start with config", d.Cmd)
	}
	var err error
	switch d.Cmd {
	case "config":
		err = tr.handleConfig(t, d)
	case "specs":
		err = tr.handleSpecs(t, d)
	case "deliver":
		err = tr.handleDeliver(t, d)
	case "dispatch":
		tr.core.Dispatch()
	case "next-dispatch":
		err = tr.handleNextDispatch(t, d)
	case "complete":
		err = tr.handleComplete(t, d)
	case "tick":
		tr.handleTick()
	case "advance":
		err = tr.handleAdvance(t, d)
	case "barrier":
		err = tr.handleBarrier(t, d)
	case "commit":
		err = tr.handleCommit()
	case "crash":
		tr.handleCrash()
	case "restore":
		err = tr.handleRestore()
	case "state":
		err = tr.handleState(t, d)
	case "mailboxes":
		tr.printMailboxes()
	case "timers":
		err = tr.handleTimers()
	case "status":
		tr.handleStatus()
	case "saturated":
		tr.handleSaturated(t, d)
	case "publisher":
		err = tr.handlePublisher(t, d)
	case "fail":
		tr.handleFail(t, d)
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	if err != nil {
		fmt.Fprintf(&tr.out, "error: %v\n", err)
	}
	if tr.core != nil {
		tr.printBuffered()
		tr.printSpilled()
	}
	if tr.out.Len() == 0 {
		return "ok\n"
	}
	return tr.out.String()
}

// config

func (tr *transcript) handleConfig(t *testing.T, d *datadriven.TestData) error {
	if tr.core != nil {
		return errors.New("config: the core is built already")
	}
	eps := map[string]*Endpoint{}
	byURL := map[string]*Endpoint{}
	var rules []router.EgressRule
	for _, line := range trLines(d) {
		cmd, args := trParseLine(t, d, line)
		switch cmd {
		case "endpoint":
			if len(args) == 0 || args[0].Vals != nil {
				d.Fatalf(t, "endpoint: want a function type first: %s", line)
			}
			ft := args[0].Key
			url := "http://" + strings.ReplaceAll(ft, "/", "-")
			if a, ok := trArg(args, "url"); ok {
				url = a
			}
			ep := byURL[url]
			if ep == nil {
				ep = &Endpoint{URL: url, MaxBatchAddresses: 4, MaxBatchMessages: 4, MaxInFlight: 2}
				byURL[url] = ep
			}
			for _, a := range args[1:] {
				switch a.Key {
				case "url":
				case "batch-addresses":
					ep.MaxBatchAddresses = trAtoi(t, d, a)
				case "batch-messages":
					ep.MaxBatchMessages = trAtoi(t, d, a)
				case "in-flight":
					ep.MaxInFlight = trAtoi(t, d, a)
				case "max-attempts":
					ep.MaxAttempts = trAtoi(t, d, a)
				case "max-age":
					ep.MaxAge = trDuration(t, d, a.Vals[0])
				default:
					d.Fatalf(t, "endpoint: unknown argument %s", a.Key)
				}
			}
			eps[ft] = ep
		case "egress":
			if len(args) < 2 {
				d.Fatalf(t, "egress: want a name and a subject: %s", line)
			}
			r := router.EgressRule{Name: args[0].Key, Subject: args[1].Key, Delivery: router.ExactlyOnce}
			if trHasArg(args, "at-least-once") {
				r.Delivery = router.AtLeastOnce
			}
			rules = append(rules, r)
		default:
			d.Fatalf(t, "config: unknown line %q", line)
		}
	}
	egresses, err := router.NewEgresses(rules)
	if err != nil {
		return err
	}
	cfg := Config{
		Index: 0, Shards: 2, KeyGroups: trKeyGroups, KGLo: 0, KGHi: trKeyGroups / 2, Sources: 2,
		Locate: trLocate,
		EndpointFor: func(ft string) (*Endpoint, bool) {
			ep, ok := eps[ft]
			return ep, ok
		},
		Egress:          egresses,
		MaxQueueBytes:   1 << 30,
		MaxOverlayBytes: 1 << 30,
		TimerScanLimit:  64,
	}
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "max-address-queue":
			cfg.MaxAddressQueue = trAtoi(t, d, a)
		case "max-queued":
			cfg.MaxQueued = trAtoi(t, d, a)
		case "max-queue-bytes":
			cfg.MaxQueueBytes = int64(trAtoi(t, d, a))
		case "max-overlay-bytes":
			cfg.MaxOverlayBytes = int64(trAtoi(t, d, a))
		case "max-spill-bytes":
			cfg.MaxSpillBytes = int64(trAtoi(t, d, a))
		case "retry":
			cfg.Retry = trPolicy(t, d, a)
		case "probe":
			cfg.Probe = trPolicy(t, d, a)
		case "max-payload":
			cfg.Limits.MaxPayload = trAtoi(t, d, a)
		case "max-delay":
			cfg.Limits.MaxDelay = trDuration(t, d, a.Vals[0])
		case "max-token":
			cfg.Limits.MaxToken = trAtoi(t, d, a)
		default:
			d.Fatalf(t, "config: unknown argument %s", a.Key)
		}
	}
	tr.cfg = cfg
	return tr.handleRestore()
}

// trLocate places ids starting with "remote" on shard 1, the others on
// shard 0, each in one of its shard's two key groups.
func trLocate(id string) (int, int) {
	shard := 0
	if strings.HasPrefix(id, trPeerIDStart) {
		shard = 1
	}
	return shard, shard*2 + keygroup.Of(id, 2)
}

func trPolicy(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) backoff.Policy {
	if len(a.Vals) != 2 {
		d.Fatalf(t, "%s: want (base, max)", a.Key)
	}
	return backoff.Policy{Base: trDuration(t, d, a.Vals[0]), Max: trDuration(t, d, a.Vals[1])}
}

func (tr *transcript) handleSpecs(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "specs: want a function type")
	}
	ft := d.CmdArgs[0].Key
	var specs []*twinflowv1.StateSpec
	for _, line := range trLines(d) {
		cmd, args := trParseLine(t, d, line)
		specs = append(specs, trSpec(t, d, cmd, args))
	}
	if _, err := tr.store.SaveSpecs(ft, specs); err != nil {
		return err
	}
	tr.specs.Merge(ft, specs)
	return nil
}

func trSpec(t *testing.T, d *datadriven.TestData, name string, args []datadriven.CmdArg) *twinflowv1.StateSpec {
	s := &twinflowv1.StateSpec{Name: name}
	for _, a := range args {
		switch a.Key {
		case "typename":
			s.Typename = a.Vals[0]
		case "expire-after-write":
			s.ExpiryMode = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_WRITE
			s.ExpireAfterMillis = trDuration(t, d, a.Vals[0]).Milliseconds()
		case "expire-after-invoke":
			s.ExpiryMode = twinflowv1.ExpiryMode_EXPIRY_MODE_AFTER_INVOKE
			s.ExpireAfterMillis = trDuration(t, d, a.Vals[0]).Milliseconds()
		default:
			d.Fatalf(t, "spec %s: unknown argument %s", name, a.Key)
		}
	}
	return s
}

// messages in

func (tr *transcript) handleDeliver(t *testing.T, d *datadriven.TestData) error {
	source := trReader
	if a, ok := trArg(d.CmdArgs, "from"); ok {
		s, known := trSources[a]
		if !known {
			d.Fatalf(t, "deliver: unknown source %q", a)
		}
		source = s
	}
	for _, line := range trLines(d) {
		cmd, args := trParseLine(t, d, line)
		env := Envelope{Target: trAddress(t, d, cmd), Typename: trTypename, Published: tr.now.UnixNano()}
		env.Payload = trPayload(t, d, args)
		for _, a := range args {
			switch a.Key {
			case "typename":
				env.Typename = a.Vals[0]
			case "reply-to":
				env.ReplyTo = a.Vals[0]
			case "caller":
				env.Caller = trAddress(t, d, a.Vals[0])
			case "key":
				env.Key = a.Vals[0]
			}
		}
		tr.core.Deliver(Item{Source: source, Msg: env})
	}
	return nil
}

func (tr *transcript) handleBarrier(t *testing.T, d *datadriven.TestData) error {
	var id uint64
	d.ScanArgs(t, "id", &id)
	a, ok := d.Arg("from")
	if !ok {
		d.Fatalf(t, "barrier: want from=(sources)")
	}
	for _, name := range a.Vals {
		s, known := trSources[name]
		if !known {
			d.Fatalf(t, "barrier: unknown source %q", name)
		}
		tr.core.Deliver(Item{Source: s, Barrier: id})
	}
	return nil
}

// calls

func (tr *transcript) handleNextDispatch(t *testing.T, d *datadriven.TestData) error {
	step, limit := time.Millisecond, time.Minute
	if a, ok := trArg(d.CmdArgs, "step"); ok {
		step = trDuration(t, d, a)
	}
	if a, ok := trArg(d.CmdArgs, "limit"); ok {
		limit = trDuration(t, d, a)
	}
	from := tr.now
	for {
		before := tr.callIDs
		tr.core.Dispatch()
		if tr.callIDs > before {
			fmt.Fprintf(&tr.out, "after %s\n", tr.now.Sub(from))
			return nil
		}
		if tr.now.Sub(from) >= limit {
			fmt.Fprintf(&tr.out, "no call started by %s\n", tr.at(tr.now))
			return nil
		}
		tr.now = tr.now.Add(step)
	}
}

// started prints a call the core started and numbers it.
func (tr *transcript) started(c *Call) {
	tr.callIDs++
	tr.calls[tr.callIDs] = c
	fmt.Fprintf(&tr.out, "call %d to %s at %s\n", tr.callIDs, c.Endpoint.URL, tr.at(tr.now))
	// The order of the batches in a call follows the order the addresses
	// became ready in, which a restore takes from a map: print them sorted.
	batches := slices.Clone(c.Request.GetBatches())
	slices.SortFunc(batches, func(x, y *twinflowv1.AddressBatch) int {
		return trCompare(trAddrOf(x.GetTarget()), trAddrOf(y.GetTarget()))
	})
	for _, b := range batches {
		var sb strings.Builder
		fmt.Fprintf(&sb, "  %s", trAddrOf(b.GetTarget()))
		if len(b.GetState()) > 0 {
			var vals []string
			for _, s := range b.GetState() {
				v := "-"
				if s.GetValue() != nil {
					v = trTyped(s.GetValue(), trValueType)
				}
				vals = append(vals, s.GetName()+"="+v)
			}
			fmt.Fprintf(&sb, " {%s}", strings.Join(vals, " "))
		}
		var invs []string
		for _, inv := range b.GetInvocations() {
			s := trTyped(inv.GetArgument(), trTypename)
			if inv.GetCaller() != nil {
				s += " from " + trAddrOf(inv.GetCaller()).String()
			}
			if inv.GetReplyTo() != "" {
				s += " reply-to " + inv.GetReplyTo()
			}
			invs = append(invs, s)
		}
		fmt.Fprintf(&sb, ": %s\n", strings.Join(invs, ", "))
		tr.out.WriteString(sb.String())
	}
}

func (tr *transcript) handleComplete(t *testing.T, d *datadriven.TestData) error {
	var id int
	d.ScanArgs(t, "call", &id)
	call := tr.calls[id]
	if call == nil {
		return fmt.Errorf("no call %d in flight", id)
	}
	switch {
	case d.HasArg("unreachable"):
		msg := strings.TrimSpace(d.Input)
		if msg == "" {
			msg = "connection refused"
		}
		delete(tr.calls, id)
		tr.core.Complete(call, nil, errors.New(msg))
		return nil
	case d.HasArg("rejected"):
		msg := strings.TrimSpace(d.Input)
		if msg == "" {
			msg = "invalid request"
		}
		delete(tr.calls, id)
		tr.core.Complete(call, nil, &RejectedError{Err: errors.New(msg)})
		return nil
	}
	// Results go in the order of the call's batches, whatever the order of
	// the lines.
	results := map[Address]*twinflowv1.AddressResult{}
	omitted := map[Address]bool{}
	var cur *twinflowv1.AddressResult
	for _, line := range trLines(d) {
		cmd, args := trParseLine(t, d, line)
		if strings.Contains(cmd, "/") {
			addr := trAddress(t, d, cmd)
			res, omit := tr.result(t, d, addr, args)
			if omit {
				omitted[addr] = true
			}
			results[addr], cur = res, res
			continue
		}
		if cur == nil {
			d.Fatalf(t, "complete: %q before any address", line)
		}
		tr.effect(t, d, cur, cmd, args)
	}
	resp := &twinflowv1.InvokeResponse{ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1}
	for _, b := range call.Request.GetBatches() {
		addr := trAddrOf(b.GetTarget())
		res := results[addr]
		if res == nil {
			return fmt.Errorf("no result for %s in call %d", addr, id)
		}
		delete(results, addr)
		if !omitted[addr] {
			resp.Results = append(resp.Results, res)
		}
	}
	if len(results) > 0 {
		return fmt.Errorf("%s is not in call %d", slices.SortedFunc(maps.Keys(results), trCompare)[0], id)
	}
	delete(tr.calls, id)
	tr.core.Complete(call, resp, nil)
	return nil
}

// result makes the result of an address line, and reports whether the line
// says to leave it out.
func (tr *transcript) result(t *testing.T, d *datadriven.TestData, addr Address, args []datadriven.CmdArg) (*twinflowv1.AddressResult, bool) {
	if len(args) == 0 {
		d.Fatalf(t, "complete: %s: want an outcome", addr)
	}
	target := addr
	if a, ok := trArg(args, "as"); ok {
		target = trAddress(t, d, a)
	}
	res := &twinflowv1.AddressResult{Target: &twinflowv1.Address{Type: target.Type, Id: target.ID}}
	switch outcome := args[0].Key; outcome {
	case "ok":
		res.Outcome = &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{}}
	case "missing-state":
		res.Outcome = &twinflowv1.AddressResult_MissingStates{MissingStates: &twinflowv1.MissingStates{}}
	case "retryable", "terminal":
		kind := twinflowv1.InvocationError_KIND_RETRYABLE
		if outcome == "terminal" {
			kind = twinflowv1.InvocationError_KIND_TERMINAL
		}
		var words []string
		at := int32(0)
		for _, a := range args[1:] {
			if a.Key == "at" {
				n, err := strconv.Atoi(a.Vals[0])
				if err != nil {
					d.Fatalf(t, "at: %v", err)
				}
				at = int32(n)
				continue
			}
			words = append(words, a.String())
		}
		res.Outcome = &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{
			Kind: kind, Message: strings.Join(words, " "), InvocationIndex: at,
		}}
	case "empty":
	case "omit":
		return res, true
	default:
		d.Fatalf(t, "complete: %s: unknown outcome %q", addr, outcome)
	}
	return res, false
}

// effect adds an effect line to an address's result.
func (tr *transcript) effect(t *testing.T, d *datadriven.TestData, res *twinflowv1.AddressResult, cmd string, args []datadriven.CmdArg) {
	if ms := res.GetMissingStates(); ms != nil {
		if cmd != "spec" || len(args) == 0 {
			d.Fatalf(t, "missing-state: want spec lines, got %s", cmd)
		}
		ms.Specs = append(ms.Specs, trSpec(t, d, args[0].Key, args[1:]))
		return
	}
	eff := res.GetEffects()
	if eff == nil {
		d.Fatalf(t, "%s: effects follow only an ok outcome", cmd)
	}
	pos := func(n int) []string {
		var p []string
		for _, a := range args {
			if a.Vals == nil {
				p = append(p, a.Key)
			}
		}
		if len(p) < n {
			d.Fatalf(t, "%s: want %d words before the options", cmd, n)
		}
		return p
	}
	typename := func(def string) string {
		if a, ok := trArg(args, "typename"); ok {
			return a
		}
		return def
	}
	switch cmd {
	case "set":
		p := pos(1)
		def := trValueType
		for _, s := range tr.specs.Of(trAddrOf(res.GetTarget()).Type) {
			if s.GetName() == p[0] && s.GetTypename() != "" {
				def = s.GetTypename()
			}
		}
		eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{
			Name: p[0], Kind: twinflowv1.StateMutation_KIND_SET,
			Value: &twinflowv1.TypedValue{Typename: typename(def), Value: trPayload(t, d, args[1:])},
		})
	case "delete":
		p := pos(1)
		eff.StateMutations = append(eff.StateMutations, &twinflowv1.StateMutation{Name: p[0], Kind: twinflowv1.StateMutation_KIND_DELETE})
	case "send":
		p := pos(1)
		to := trAddress(t, d, p[0])
		o := &twinflowv1.OutgoingMessage{
			Target:   &twinflowv1.Address{Type: to.Type, Id: to.ID},
			Argument: &twinflowv1.TypedValue{Typename: typename(trTypename), Value: trPayload(t, d, args[1:])},
		}
		if a, ok := trArg(args, "reply-to"); ok {
			o.ReplyTo = a
		}
		eff.Outgoing = append(eff.Outgoing, o)
	case "send-after":
		p := pos(2)
		to := trAddress(t, d, p[1])
		dm := &twinflowv1.DelayedMessage{
			Target:      &twinflowv1.Address{Type: to.Type, Id: to.ID},
			Argument:    &twinflowv1.TypedValue{Typename: typename(trTypename), Value: trPayload(t, d, args[2:])},
			DelayMillis: trDelayMillis(t, d, p[0]),
		}
		if a, ok := trArg(args, "token"); ok {
			dm.CancellationToken = a
		}
		eff.Delayed = append(eff.Delayed, dm)
	case "cancel":
		p := pos(1)
		eff.Cancellations = append(eff.Cancellations, &twinflowv1.DelayedCancellation{CancellationToken: p[0]})
	case "egress":
		p := pos(1)
		e := &twinflowv1.EgressRecord{Egress: p[0], Value: &twinflowv1.TypedValue{Typename: typename(trTypename), Value: trPayload(t, d, args[1:])}}
		if a, ok := trArg(args, "key"); ok {
			e.Key = a
		}
		eff.Egress = append(eff.Egress, e)
	case "reply":
		p := pos(1)
		eff.Egress = append(eff.Egress, &twinflowv1.EgressRecord{
			Egress: router.ReplyEgress, ReplyTo: p[0],
			Value: &twinflowv1.TypedValue{Typename: typename(trTypename), Value: trPayload(t, d, args[1:])},
		})
	default:
		d.Fatalf(t, "unknown effect %q", cmd)
	}
}

// delayMillis reads a delay: a duration, or a number of milliseconds
// ("9223372036854775807ms") where a duration would overflow.
func trDelayMillis(t *testing.T, d *datadriven.TestData, s string) int64 {
	if dur, err := time.ParseDuration(s); err == nil {
		return dur.Milliseconds()
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(s, "ms"), 10, 64)
	if err != nil {
		d.Fatalf(t, "delay %q: neither a duration nor milliseconds", s)
	}
	return n
}

// time and checkpoints

func (tr *transcript) handleTick() {
	before := tr.core.nQueued + tr.core.nSpilled
	peer := tr.out.Len()
	tr.core.Tick()
	if n := tr.core.nQueued + tr.core.nSpilled - before; n > 0 {
		fmt.Fprintf(&tr.out, "delayed messages fired here: %d\n", n)
	} else if tr.out.Len() == peer {
		fmt.Fprintf(&tr.out, "nothing due at %s\n", tr.at(tr.now))
	}
}

func (tr *transcript) handleAdvance(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "advance: want a duration")
	}
	tr.now = tr.now.Add(trDuration(t, d, d.CmdArgs[0].Key))
	fmt.Fprintf(&tr.out, "now %s\n", tr.at(tr.now))
	return nil
}

// handleCommit commits the parts handed off, oldest first, as one batch,
// as the coordinator does, then tells the core.
func (tr *transcript) handleCommit() error {
	if len(tr.parts) == 0 {
		return errors.New("no part to commit")
	}
	overlays := make([]*state.Overlay, len(tr.parts))
	for i, p := range tr.parts {
		overlays[i] = p.Overlay
	}
	if _, err := tr.store.Commit(overlays, nil); err != nil {
		return err
	}
	for _, p := range tr.parts {
		fmt.Fprintf(&tr.out, "committed checkpoint %d\n", p.ID)
		for _, rec := range p.Egress {
			fmt.Fprintf(&tr.out, "  published %s\n", trRecord(rec))
		}
		tr.core.Committed(p)
	}
	tr.parts = nil
	return nil
}

// handleCrash drops the core and everything not committed: calls in
// flight, parts not committed, uncommitted writes.
func (tr *transcript) handleCrash() {
	tr.core.Close()
	tr.core, tr.layers = nil, nil
	fmt.Fprintf(&tr.out, "crashed: %d calls in flight and %d parts not committed are lost\n", len(tr.calls), len(tr.parts))
	tr.calls, tr.parts = nil, nil
}

// handleRestore builds a core on the store, as a restart does, and prints
// what it restored.
func (tr *transcript) handleRestore() error {
	if tr.core != nil {
		return errors.New("restore: the core is running; crash it first")
	}
	if tr.cfg.Locate == nil {
		return errors.New("restore: no config yet")
	}
	specs, err := tr.store.LoadSpecs()
	if err != nil {
		return err
	}
	tr.specs = NewSpecs(specs)
	tr.layers = state.NewLayers(tr.store, DefaultDedupWindow, quietLog)
	tr.calls = map[int]*Call{}
	tr.printed = map[*storagev1.EgressRecord]bool{}
	tr.faults = &faultStore{Store: tr.layers}
	tr.core = NewCore(tr.cfg, (*transcriptEnv)(tr), tr.faults, tr.specs, NewMetrics(nil), quietLog)
	if err := tr.core.Restore(); err != nil {
		return err
	}
	tr.spilled = tr.core.nSpilled
	tr.printMailboxes()
	return nil
}

// inspection

func (tr *transcript) handleState(t *testing.T, d *datadriven.TestData) error {
	if len(d.CmdArgs) != 1 {
		d.Fatalf(t, "state: want an address")
	}
	vals, err := tr.core.GetState(trAddress(t, d, d.CmdArgs[0].Key))
	if err != nil {
		return err
	}
	if len(vals) == 0 {
		tr.out.WriteString("no state\n")
	}
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		v := vals[name]
		s := trTyped(&twinflowv1.TypedValue{Typename: v.Typename, Value: v.Data}, trValueType)
		fmt.Fprintf(&tr.out, "%s=%s", name, s)
		if v.ExpiresAtMillis > 0 {
			fmt.Fprintf(&tr.out, " expires at %s", tr.at(time.UnixMilli(v.ExpiresAtMillis)))
		}
		tr.out.WriteString("\n")
	}
	return nil
}

// printMailboxes prints the mailboxes: the batch in a call or failed, the
// messages queued in memory, the spilled backlog, and retry times.
func (tr *transcript) printMailboxes() {
	c := tr.core
	addrs := slices.SortedFunc(maps.Keys(c.boxes), trCompare)
	if len(addrs) == 0 {
		tr.out.WriteString("no mailboxes\n")
	}
	for _, addr := range addrs {
		b := c.boxes[addr]
		fmt.Fprintf(&tr.out, "%s:", addr)
		if len(b.inflight) > 0 {
			what := "in call"
			if !b.inCall {
				what = "failed"
			}
			fmt.Fprintf(&tr.out, " %s [%s]", what, trPayloads(b.inflight))
		}
		if len(b.queue) > 0 {
			fmt.Fprintf(&tr.out, " queued [%s]", trPayloads(b.queue))
		}
		if n := b.spilledCount(); n > 0 {
			fmt.Fprintf(&tr.out, " spilled %d", n)
		}
		if b.attempts > 0 {
			fmt.Fprintf(&tr.out, " attempts %d since %s", b.attempts, tr.at(b.failingSince))
		}
		if !b.retryAt.IsZero() {
			fmt.Fprintf(&tr.out, " retry at %s", tr.at(b.retryAt))
		}
		tr.out.WriteString("\n")
	}
}

func (tr *transcript) handleTimers() error {
	n := 0
	err := state.DueTimers(tr.layers.View(), tr.core.keyGroups(), math.MaxInt64, 0, func(_ []byte, tm *storagev1.Timer) error {
		n++
		fmt.Fprintf(&tr.out, "%s: %s → %s %s", tr.at(time.UnixMilli(tm.GetDueUnixMillis())),
			trAddrOf(tm.GetOwner()), trAddrOf(tm.GetTarget()), trTyped(tm.GetArgument(), trTypename))
		if tm.GetToken() != "" {
			fmt.Fprintf(&tr.out, " token %s", tm.GetToken())
		}
		tr.out.WriteString("\n")
		return nil
	})
	if n == 0 && err == nil {
		tr.out.WriteString("no delayed messages\n")
	}
	return err
}

func (tr *transcript) handleStatus() {
	s := tr.core.Status()
	slices.SortFunc(s.Unreachable, func(x, y EndpointDown) int { return strings.Compare(x.URL, y.URL) })
	for _, u := range s.Unreachable {
		fmt.Fprintf(&tr.out, "unreachable %s since %s: %s\n", u.URL, tr.at(u.Since), u.LastError)
	}
	fmt.Fprintf(&tr.out, "failing addresses: %d\n", s.Failing)
	fmt.Fprintf(&tr.out, "spilled: %d messages\n", s.SpilledMessages)
}

func (tr *transcript) handleSaturated(t *testing.T, d *datadriven.TestData) {
	var bytes, msgs int64
	d.MaybeScanArgs(t, "inbox-bytes", &bytes)
	d.MaybeScanArgs(t, "inbox-msgs", &msgs)
	if sat, why := tr.core.Saturated(bytes, msgs); sat {
		fmt.Fprintf(&tr.out, "saturated: %s\n", why)
	} else {
		tr.out.WriteString("not saturated\n")
	}
}

func (tr *transcript) handlePublisher(t *testing.T, d *datadriven.TestData) error {
	switch {
	case d.HasArg("full"):
		tr.refuse = true
	case d.HasArg("ok"):
		tr.refuse = false
	default:
		d.Fatalf(t, "publisher: full or ok")
	}
	return nil
}

func (tr *transcript) handleFail(t *testing.T, d *datadriven.TestData) {
	switch {
	case d.HasArg("take-spilled"):
		tr.faults.takeSpilled++
	case d.HasArg("save-specs"):
		tr.noSpecs++
	default:
		d.Fatalf(t, "fail: take-spilled or save-specs")
	}
}

// faultStore is the core's store, with failures injected where a test asks
// for them.
type faultStore struct {
	Store
	takeSpilled int // reads of spilled backlogs left to fail
}

func (f *faultStore) TakeSpilled(kg int, addr state.Address, from uint64, n int) ([]*storagev1.Pending, int64, error) {
	if f.takeSpilled > 0 {
		f.takeSpilled--
		return nil, 0, errors.New("injected read error")
	}
	return f.Store.TakeSpilled(kg, addr, from, n)
}

// printBuffered prints the records the core buffered for the next
// checkpoint since it last looked: exactly-once egress and dead letters.
func (tr *transcript) printBuffered() {
	var recs []*storagev1.EgressRecord
	if p := tr.core.ckpt; p != nil {
		recs = append(recs, p.part.Egress...)
	}
	recs = append(recs, tr.core.egressBuf...)
	for _, r := range recs {
		if !tr.printed[r] {
			tr.printed[r] = true
			fmt.Fprintf(&tr.out, "buffered %s\n", trRecord(r))
		}
	}
}

// printSpilled prints a change of the number of spilled messages.
func (tr *transcript) printSpilled() {
	if n := tr.core.nSpilled; n != tr.spilled {
		fmt.Fprintf(&tr.out, "spilled messages: %d → %d\n", tr.spilled, n)
		tr.spilled = n
	}
}

// transcriptEnv is the world as the core sees it: everything it asks for
// is printed.
type transcriptEnv transcript

func (e *transcriptEnv) tr() *transcript { return (*transcript)(e) }
func (e *transcriptEnv) Now() time.Time  { return e.now }
func (e *transcriptEnv) Wall() time.Time { return e.now }
func (e *transcriptEnv) Send(shard int, it Item) {
	if shard != trPeer {
		e.t.Fatalf("sent to shard %d, which does not exist", shard)
	}
	if it.Barrier != 0 {
		fmt.Fprintf(&e.out, "to peer: barrier %d\n", it.Barrier)
		return
	}
	m := &it.Msg
	fmt.Fprintf(&e.out, "to peer: %s %s", m.Target, trTyped(&twinflowv1.TypedValue{Typename: m.Typename, Value: m.Payload}, trTypename))
	if m.Caller.Type != "" {
		fmt.Fprintf(&e.out, " from %s", m.Caller)
	}
	if m.ReplyTo != "" {
		fmt.Fprintf(&e.out, " reply-to %s", m.ReplyTo)
	}
	e.out.WriteString("\n")
}
func (e *transcriptEnv) Call(c *Call) { e.tr().started(c) }
func (e *transcriptEnv) PublishNow(recs []*storagev1.EgressRecord) bool {
	if e.refuse {
		return false
	}
	for _, r := range recs {
		fmt.Fprintf(&e.out, "published now %s\n", trRecord(r))
	}
	return true
}
func (e *transcriptEnv) Reply(r *storagev1.EgressRecord) {
	fmt.Fprintf(&e.out, "reply %s\n", trRecord(r))
}
func (e *transcriptEnv) Part(p *Part) {
	e.parts = append(e.parts, p)
	fmt.Fprintf(&e.out, "part of checkpoint %d: %d messages in mailboxes, %d records\n", p.ID, p.Pending, len(p.Egress))
}
func (e *transcriptEnv) SaveSpecs(ft string, specs []*twinflowv1.StateSpec) error {
	if e.noSpecs > 0 {
		e.noSpecs--
		e.out.WriteString("saving specs failed\n")
		return errors.New("injected write error")
	}
	all, err := e.store.SaveSpecs(ft, specs)
	if err != nil {
		return err
	}
	var names []string
	for _, s := range all {
		names = append(names, s.GetName())
	}
	fmt.Fprintf(&e.out, "saved specs of %s: %s\n", ft, strings.Join(names, ", "))
	return nil
}
func (e *transcriptEnv) WantCheckpoint() { e.out.WriteString("wants a checkpoint\n") }

// formatting and parsing

// at formats a time relative to the start of the transcript.
func (tr *transcript) at(t time.Time) string {
	return "+" + t.Sub(tr.start).Round(time.Millisecond).String()
}

// record formats an egress record: a dead letter by its target, payload and
// error; other records by subject and payload.
func trRecord(r *storagev1.EgressRecord) string {
	h := r.GetHeaders()
	data := trPrintable(r.GetData())
	switch {
	case r.GetSubject() == router.FunctionDeadLetterSubject && h[router.TargetHeader] != "":
		s := fmt.Sprintf("dead letter for %s %s: %s", h[router.TargetHeader], data, h[router.ErrorHeader])
		if c := h[router.CallerHeader]; c != "" {
			s = fmt.Sprintf("dead letter for %s %s from %s: %s", h[router.TargetHeader], data, c, h[router.ErrorHeader])
		}
		return s
	case r.GetSubject() == router.FunctionDeadLetterSubject:
		return fmt.Sprintf("dead letter of egress from %s %s: %s", h[router.SourceHeader], data, h[router.ErrorHeader])
	case h[router.ErrorHeader] != "" && h[router.ErrorReasonHeader] != "":
		return fmt.Sprintf("to %s: error %s: %s", r.GetSubject(), h[router.ErrorReasonHeader], h[router.ErrorHeader])
	case h[router.ErrorHeader] != "":
		return fmt.Sprintf("to %s: error %s", r.GetSubject(), h[router.ErrorHeader])
	}
	return fmt.Sprintf("to %s: %s", r.GetSubject(), data)
}

// typed formats a value, with its typename unless it is def.
func trTyped(v *twinflowv1.TypedValue, def string) string {
	s := trPrintable(v.GetValue())
	if v.GetTypename() != def {
		s += " (" + v.GetTypename() + ")"
	}
	return s
}

// printable shows a payload as text, or by its size when it is long.
func trPrintable(b []byte) string {
	if len(b) > 32 {
		return fmt.Sprintf("<%d bytes>", len(b))
	}
	return string(b)
}

func trPayloads(envs []Envelope) string {
	s := make([]string, len(envs))
	for i := range envs {
		s[i] = trPrintable(envs[i].Payload)
	}
	return strings.Join(s, " ")
}

func trCompare(x, y Address) int { return strings.Compare(x.String(), y.String()) }

func trAddrOf(a *twinflowv1.Address) Address { return Address{Type: a.GetType(), ID: a.GetId()} }

// address parses "namespace/name/id".
func trAddress(t *testing.T, d *datadriven.TestData, s string) Address {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		d.Fatalf(t, "%q is not an address (namespace/name/id)", s)
	}
	return Address{Type: s[:i], ID: s[i+1:]}
}

// payload is the first word of args without a value, or bytes=N bytes.
func trPayload(t *testing.T, d *datadriven.TestData, args []datadriven.CmdArg) []byte {
	for _, a := range args {
		if a.Key == "bytes" {
			return []byte(strings.Repeat("x", trAtoi(t, d, a)))
		}
	}
	for _, a := range args {
		if a.Vals == nil {
			return []byte(a.Key)
		}
	}
	return nil
}

func trLines(d *datadriven.TestData) []string {
	var lines []string
	for _, l := range strings.Split(d.Input, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func trParseLine(t *testing.T, d *datadriven.TestData, line string) (string, []datadriven.CmdArg) {
	cmd, args, err := datadriven.ParseLine(line)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return cmd, args
}

func trArg(args []datadriven.CmdArg, key string) (string, bool) {
	for _, a := range args {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals[0], true
		}
	}
	return "", false
}

func trHasArg(args []datadriven.CmdArg, key string) bool {
	return slices.ContainsFunc(args, func(a datadriven.CmdArg) bool { return a.Key == key })
}

func trAtoi(t *testing.T, d *datadriven.TestData, a datadriven.CmdArg) int {
	if len(a.Vals) != 1 {
		d.Fatalf(t, "%s: want one number", a.Key)
	}
	n, err := strconv.Atoi(a.Vals[0])
	if err != nil {
		d.Fatalf(t, "%s: %v", a.Key, err)
	}
	return n
}

func trDuration(t *testing.T, d *datadriven.TestData, s string) time.Duration {
	v, err := time.ParseDuration(s)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return v
}
