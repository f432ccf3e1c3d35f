package datacenter_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/examples/datacenter/sim"
	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/internal/tsendpoint"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// TestEndToEnd is the acceptance test of the data-center twin: a worker
// with deploy/datacenter/module.yaml and an embedded NATS server, the
// twins behind a loopback function endpoint, and a simulated data center of
// 3 racks of 4 servers publishing through JetStream, whose top-of-rack
// switch of rack-1 fails and is repaired.
//
// Time is simulated. The worker's clock (which fires the twins' timers)
// and the twins' own clock both read the simulated time, which the test
// moves with the reports' timestamps, one interval per round, and only
// once the twins have taken in the whole round. A rack's correlation
// check therefore always sees every server's incidents of a round, however
// slowly the machine runs, and no server looks silent because the test was
// slow to publish. The waits are bounded only to catch hangs.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker with an embedded NATS server")
	}
	endToEnd(t, false)
}

// TestEndToEndTypeScriptRack is TestEndToEnd with
// deploy/datacenter/module-ts-rack.yaml: the rack twins are served by the
// TypeScript endpoint (examples/datacenter/ts, in a Node process), the
// other twins by the Go one. The twin behaves the same: the same alerts,
// rack state and answers.
func TestEndToEndTypeScriptRack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker with an embedded NATS server")
	}
	endToEnd(t, true)
}

// endToEnd runs the scenario of TestEndToEnd, with the rack twins served
// by the TypeScript endpoint when tsRack is true.
func endToEnd(t *testing.T, tsRack bool) {
	const (
		interval   = 5 * time.Second
		failAt     = 30 * time.Second
		repairAt   = 60 * time.Second
		faultyRack = "rack-1"
	)
	dc, err := sim.New(sim.Config{Racks: 3, ServersPerRack: 4, Seed: 1}, []sim.Fault{
		{Kind: sim.TOR, Target: faultyRack, At: failAt},
		{Kind: sim.Clear, Target: faultyRack, At: repairAt},
	})
	if err != nil {
		t.Fatal(err)
	}
	var faulty []string
	for _, s := range dc.Servers() {
		if s.Rack == faultyRack {
			faulty = append(faulty, s.ID)
		}
	}
	slices.Sort(faulty)

	d := deploy(t, tsRack)
	d.commission(dc.Servers())
	next := time.Duration(0) // the time of the next round
	runUntil := func(end time.Duration) {
		for ; next <= end; next += interval {
			d.round(dc, next)
		}
	}
	runUntil(failAt)

	// The switch failed in the last round. Every server behind it saw its
	// packets dropped: the rack knows, but waits for its correlation
	// delay, which the next round's clock passes.
	if got := d.rackState(faultyRack).Histogram[datacenter.PacketLoss]; got != len(faulty) {
		t.Fatalf("one round after the switch failed, %d of the %d servers of %s have PACKET_LOSS; "+
			"the simulation or the health model changed, and this test relies on the whole rack noticing at once",
			got, len(faulty), faultyRack)
	}
	runUntil(failAt + interval)
	got := d.alerts.await(t, "the switch failure of "+faultyRack, func(a alertSnapshot) error {
		if n := len(a.opened(faultyRack, datacenter.PacketLoss)); n < len(faulty) {
			return fmt.Errorf("%d of %d servers of %s alerted PACKET_LOSS", n, len(faulty), faultyRack)
		}
		if len(a.rackAlerts) == 0 {
			return fmt.Errorf("no rack alert yet")
		}
		return nil
	})
	if servers := got.opened(faultyRack, datacenter.PacketLoss); !slices.Equal(servers, faulty) {
		t.Errorf("PACKET_LOSS alerted for %v, want %v", servers, faulty)
	}
	if len(got.rackAlerts) != 1 {
		t.Fatalf("%d rack alerts, want exactly one:\n%s", len(got.rackAlerts), got)
	}
	checkSwitchFailure(t, got.rackAlerts[0], faultyRack, faulty)

	// The data center lists the rack, once the alert has reached it.
	d.await("the data center to learn of "+faultyRack, func() error {
		racks, _ := readState(d, datacenter.DataCenterFunction, "dc", datacenter.UnhealthyRacksState)
		if _, ok := racks[faultyRack]; !ok {
			return fmt.Errorf("unhealthy racks %v", slices.Sorted(maps.Keys(racks)))
		}
		return nil
	})
	answer := d.unhealthyRacks()
	if len(answer) != 1 {
		t.Fatalf("GetUnhealthyRacks answered %d racks, want %s alone:\n%s", len(answer),
			faultyRack, datacenter.DescribeUnhealthyRacks(&datacenterv1.UnhealthyRacks{Racks: answer}))
	}
	checkSwitchFailure(t, answer[0], faultyRack, faulty)

	// A server's twin, read by address through the admin API, holds its
	// window: every report so far, 5s apart, the newest dropping packets.
	srv := faulty[0]
	window, ok := readState(d, datacenter.ServerFunction, srv, datacenter.ServerWindowState)
	if !ok {
		t.Fatalf("%s/%s has no window", datacenter.ServerFunction, srv)
	}
	if rounds := int(next / interval); len(window) != rounds {
		t.Errorf("window of %s holds %d reports, want the %d published", srv, len(window), rounds)
	}
	if newest, _ := window.Newest(); !newest.At.Equal(t0.Add(next-interval)) || newest.PacketDrop < 0.15 {
		t.Errorf("newest report in the window of %s: %+v, want the one of %v dropping 15%% or more", srv, newest, next-interval)
	}
	health, _ := readState(d, datacenter.ServerFunction, srv, datacenter.ServerHealthState)
	if _, open := health.Incidents[datacenter.PacketLoss]; health.RackID != faultyRack || !open {
		t.Errorf("health of %s: %+v, want rack %s with PACKET_LOSS open", srv, health, faultyRack)
	}

	// The switch is repaired; the mean drop rate falls to normal within
	// three reports, and the rack reports OK after its delay.
	runUntil(repairAt + 3*interval)
	got = d.alerts.await(t, faultyRack+" to recover", func(a alertSnapshot) error {
		if len(a.rackOks) == 0 {
			return fmt.Errorf("no RackOk yet")
		}
		return nil
	})
	if len(got.rackOks) != 1 || got.rackOks[0].GetRackId() != faultyRack {
		t.Errorf("RackOk records %v, want one for %s:\n%s", got.rackOks, faultyRack, got)
	}
	d.await("the data center to learn that "+faultyRack+" recovered", func() error {
		racks, _ := readState(d, datacenter.DataCenterFunction, "dc", datacenter.UnhealthyRacksState)
		if len(racks) != 0 {
			return fmt.Errorf("unhealthy racks %v", slices.Sorted(maps.Keys(racks)))
		}
		return nil
	})
	if answer := d.unhealthyRacks(); len(answer) != 0 {
		t.Errorf("GetUnhealthyRacks after the repair:\n%s", datacenter.DescribeUnhealthyRacks(&datacenterv1.UnhealthyRacks{Racks: answer}))
	}

	// Everything the twins did is checkpointed and its egress published:
	// the alerts are complete. One switch failure is one rack alert and one
	// recovery, and the healthy racks said nothing.
	got = d.allAlerts()
	t.Logf("the alerts:\n%s", got)
	if servers := got.opened(faultyRack, datacenter.PacketLoss); !slices.Equal(servers, faulty) {
		t.Errorf("PACKET_LOSS opened for %v, want %v once each:\n%s", servers, faulty, got)
	}
	if servers := got.resolved(faultyRack, datacenter.PacketLoss); !slices.Equal(servers, faulty) {
		t.Errorf("PACKET_LOSS resolved for %v, want %v once each:\n%s", servers, faulty, got)
	}
	if n := len(got.serverAlerts); n != 2*len(faulty) {
		t.Errorf("%d server alerts, want %d: an open and a resolved one for each server of %s:\n%s", n, 2*len(faulty), faultyRack, got)
	}
	if len(got.rackAlerts) != 1 || len(got.rackOks) != 1 {
		t.Errorf("%d rack alerts and %d RackOk, want one of each, for %s:\n%s", len(got.rackAlerts), len(got.rackOks), faultyRack, got)
	}
}

// checkSwitchFailure checks a rack alert blaming the switch of rack for
// all its servers.
func checkSwitchFailure(t *testing.T, a *datacenterv1.RackAlert, rack string, servers []string) {
	t.Helper()
	if a.GetRackId() != rack || datacenter.RackKindOf(a.GetKind()) != datacenter.TORSwitchFailure ||
		!slices.Equal(a.GetServerIds(), servers) || int(a.GetKnownServers()) != len(servers) {
		t.Errorf("rack alert %v, want %s for %s %v", a, datacenter.TORSwitchFailure, rack, servers)
	}
}

// simClock is the simulated time of an end-to-end test. Between two moves
// by the test it creeps on at a thousandth of the wall clock's pace: a
// call the worker retries (after a millisecond here) goes on within a
// second, while the twins' timers, seconds of simulated time away, wait
// for the test to move the clock.
type simClock struct {
	mu struct {
		sync.Mutex
		set    time.Time // the simulated time the test set last
		wallAt time.Time // when it did
	}
}

// creep is how many times slower than the wall clock the simulated time
// runs between two moves.
const creep = 1000

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.set.Add(time.Since(c.mu.wallAt) / creep)
}

// Set moves the simulated time to now.
func (c *simClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.set, c.mu.wallAt = now, time.Now()
}

// deployment is a worker running deploy/datacenter/module.yaml with the
// twins behind a loopback endpoint, on a simulated clock.
type deployment struct {
	t      *testing.T
	clock  *simClock
	engine *runtime.Engine
	js     jetstream.JetStream
	admin  twinflowv1connect.AdminServiceClient
	alerts *alertLog
}

// deploy starts the twins' endpoint and a worker with the example's module
// spec, pointed at the endpoint, and starts reading the alerts. With
// tsRack the rack twins are served by the TypeScript endpoint instead, as
// deploy/datacenter/module-ts-rack.yaml says.
func deploy(t *testing.T, tsRack bool) *deployment {
	t.Helper()
	clock := &simClock{}
	clock.Set(t0)
	reg := sdk.NewRegistry()
	if err := datacenter.Register(reg, datacenter.Config{Now: clock.Now}); err != nil {
		t.Fatal(err)
	}
	// The endpoint verifies the runtime's signature, as
	// datacenter-functions does: the data dir's keys are made first.
	dataDir := t.TempDir()
	keys, err := secrets.Ensure(dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	verify, err := sdk.ParseVerifyKeys(secrets.EncodePublicKey(keys.Signing.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = sdk.Handler(reg, sdk.WithVerifyKeys(verify...))
	specPath := "../../deploy/datacenter/module.yaml"
	tsURL := ""
	if tsRack {
		specPath = "../../deploy/datacenter/module-ts-rack.yaml"
		tsURL = tsendpoint.Start(t, "../..", tsRackScript, "--listen")
		h = refusing(t, datacenter.RackFunction, h)
	}
	endpoint := httptest.NewServer(h)
	t.Cleanup(endpoint.Close)

	module, err := spec.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range module.Endpoints {
		module.Endpoints[i].URL = endpoint.URL
		if module.Endpoints[i].Functions == datacenter.RackFunction {
			module.Endpoints[i].URL = tsURL
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	e, err := runtime.Start(context.Background(), runtime.Config{
		DataDir:            dataDir,
		Module:             module,
		NATSPort:           -1,
		NATSSyncInterval:   time.Minute, // no fsync per write: nothing here survives the test
		AdminAddr:          "127.0.0.1:0",
		Shards:             2,
		KeyGroups:          16,
		CheckpointInterval: 50 * time.Millisecond,
		RetryBase:          time.Millisecond, // of simulated time: see simClock
		RetryMax:           time.Millisecond,
		Memory:             runtime.Memory{Total: 256 << 20},
		Logger:             logger,
		Now:                clock.Now,
		ConsolePages:       map[string]fs.FS{"datacenter": datacenter.ConsolePage},
	})
	if err != nil {
		t.Fatalf("starting the worker: %v", err)
	}
	t.Cleanup(e.Kill)
	// The publisher and the reader of alerts are the client identity.
	nc, js, err := e.Access().ConnectNATS("datacenter-e2e", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	hc, err := e.Access().AdminHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{
		t:      t,
		clock:  clock,
		engine: e,
		js:     js,
		admin:  twinflowv1connect.NewAdminServiceClient(hc, e.AdminURL()),
	}
	d.alerts = readAlerts(t, js)
	return d
}

// refusing wraps the Go endpoint's handler in a check that no call for
// functionType reaches it.
func refusing(t *testing.T, functionType string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req twinflowv1.InvokeRequest
		if proto.Unmarshal(body, &req) == nil {
			for _, b := range req.GetBatches() {
				if b.GetTarget().GetType() == functionType {
					t.Errorf("a call for %s reached the Go endpoint", functionType)
				}
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

// testLog writes the worker's log to the test's.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// await waits for cond to return nil, failing with its last error after a
// bound that only guards against a hang.
func (d *deployment) await(what string, cond func() error) {
	d.t.Helper()
	testwait.Nil(d.t, what, cond)
}

// commission takes the servers into service through the provisioning
// ingress, as the simulator does.
func (d *deployment) commission(servers []sim.Server) {
	d.t.Helper()
	msgs := make([]*nats.Msg, 0, len(servers))
	for _, s := range servers {
		m := nats.NewMsg(datacenter.ProvisioningSubject(s.Rack))
		m.Header.Set(datacenter.TypenameHeader, datacenter.CommissionServerType.Typename())
		m.Header.Set(datacenter.ServerHeader, s.ID)
		m.Data = marshal(d.t, &datacenterv1.CommissionServer{ServerId: s.ID, RackId: s.Rack})
		msgs = append(msgs, m)
	}
	d.publish(msgs)
}

// round moves the clock to elapsed after the start (the timers due by then
// fire), applies the faults due, publishes every live server's report
// taken then, and waits until the twins have taken the round in: every
// server's newest report is this round's, and every rack holds its
// servers' open incidents. Only then may the clock move on.
func (d *deployment) round(dc *sim.DataCenter, elapsed time.Duration) {
	d.t.Helper()
	at := t0.Add(elapsed)
	d.clock.Set(at)
	for _, f := range dc.Advance(elapsed) {
		d.t.Logf("%v: fault %s", elapsed, f)
	}
	reports := dc.Reports(at)
	msgs := make([]*nats.Msg, 0, len(reports))
	for _, r := range reports {
		m := nats.NewMsg(datacenter.MetricsSubject(r.GetRackId(), r.GetServerId()))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s@%d", r.GetServerId(), at.UnixNano()))
		m.Data = marshal(d.t, r)
		msgs = append(msgs, m)
	}
	d.publish(msgs)
	d.await(fmt.Sprintf("the reports of %v", elapsed), func() error {
		racks := make(map[string]datacenter.RackState)
		for _, r := range reports {
			h, _ := readState(d, datacenter.ServerFunction, r.GetServerId(), datacenter.ServerHealthState)
			if !h.LastReportAt.Equal(at) {
				return fmt.Errorf("newest report of %s is of %v", r.GetServerId(), h.LastReportAt.Sub(t0))
			}
			st, ok := racks[r.GetRackId()]
			if !ok {
				st = d.rackState(r.GetRackId())
				racks[r.GetRackId()] = st
			}
			open := slices.Sorted(maps.Keys(h.Incidents))
			if got, known := st.Servers[r.GetServerId()]; !known || !slices.Equal(got, open) {
				return fmt.Errorf("%s holds %v for %s, whose open incidents are %v", r.GetRackId(), got, r.GetServerId(), open)
			}
		}
		return nil
	})
}

// publish publishes msgs through JetStream and waits for their
// acknowledgements.
func (d *deployment) publish(msgs []*nats.Msg) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := d.js.PublishMsgAsync(m)
		if err != nil {
			d.t.Fatalf("publishing to %s: %v", m.Subject, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			d.t.Fatalf("publishing to %s: %v", f.Msg().Subject, err)
		case <-ctx.Done():
			d.t.Fatalf("publishing to %s: %v", f.Msg().Subject, ctx.Err())
		}
	}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readState reads one value of an address through the admin API, and
// reports whether it is set.
func readState[T any](d *deployment, functionType, id string, vs sdk.ValueSpec[T]) (T, bool) {
	d.t.Helper()
	var zero T
	resp, err := d.admin.GetState(context.Background(), connect.NewRequest(&twinflowv1.GetStateRequest{
		Address: &twinflowv1.Address{Type: functionType, Id: id},
		Names:   []string{vs.Name},
	}))
	if err != nil {
		d.t.Fatalf("reading state of %s/%s: %v", functionType, id, err)
	}
	for _, e := range resp.Msg.GetValues() {
		if e.GetName() != vs.Name {
			continue
		}
		v, err := sdk.Decode(vs.Type, sdk.TypedValue{Typename: e.GetValue().GetTypename(), Bytes: e.GetValue().GetValue()})
		if err != nil {
			d.t.Fatalf("state %q of %s/%s: %v", vs.Name, functionType, id, err)
		}
		return v, true
	}
	return zero, false
}

func (d *deployment) rackState(rack string) datacenter.RackState {
	d.t.Helper()
	st, _ := readState(d, datacenter.RackFunction, rack, datacenter.RackStateSpec)
	return st
}

// unhealthyRacks asks the data-center twin GetUnhealthyRacks as a NATS
// request through the direct ingress.
func (d *deployment) unhealthyRacks() []*datacenterv1.RackAlert {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	header := nats.Header{}
	header.Set(datacenter.TypenameHeader, datacenter.GetUnhealthyRacksType.Typename())
	// GetUnhealthyRacks has no fields: its encoding is empty.
	reply, err := natsbus.Request(ctx, d.js, datacenter.DirectSubject(datacenter.DataCenterFunction, "dc"), header, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	if e := reply.Header.Get(router.ErrorHeader); e != "" {
		d.t.Fatalf("GetUnhealthyRacks: the worker answered with an error: %s", e)
	}
	answer, err := sdk.Decode(datacenter.UnhealthyRacksType, sdk.TypedValue{
		Typename: reply.Header.Get(datacenter.TypenameHeader), Bytes: reply.Data,
	})
	if err != nil {
		d.t.Fatalf("answer to GetUnhealthyRacks: %v", err)
	}
	return answer.GetRacks()
}

// allAlerts takes a checkpoint, which publishes the egress of everything
// processed so far, and returns the alerts once all are read.
func (d *deployment) allAlerts() alertSnapshot {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.engine.Checkpoint(ctx); err != nil {
		d.t.Fatalf("checkpoint: %v", err)
	}
	info, err := d.alerts.stream.Info(ctx)
	if err != nil {
		d.t.Fatal(err)
	}
	last := info.State.LastSeq
	return d.alerts.await(d.t, "the alerts to be read", func(a alertSnapshot) error {
		if a.lastSeq < last {
			return fmt.Errorf("read up to sequence %d of %d", a.lastSeq, last)
		}
		return nil
	})
}

// alertLog reads the alerts egress's stream, in which JetStream keeps
// each record once, as the egress publishes them.
type alertLog struct {
	stream jetstream.Stream
	mu     struct {
		sync.Mutex
		snap alertSnapshot
		err  error
	}
}

// alertSnapshot is what the alerts stream held at some point, in order.
type alertSnapshot struct {
	lastSeq      uint64
	lines        []string
	serverAlerts []*datacenterv1.ServerAlert
	rackAlerts   []*datacenterv1.RackAlert
	rackOks      []*datacenterv1.RackOk
}

func readAlerts(t *testing.T, js jetstream.JetStream) *alertLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, datacenter.AlertsSubject)
	if err != nil {
		t.Fatalf("no stream holds the alerts egress: %v", err)
	}
	l := &alertLog{}
	if l.stream, err = js.Stream(ctx, name); err != nil {
		t.Fatal(err)
	}
	// The client identity reads the stream by direct gets, in order; it
	// may not create consumers.
	readCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for next := uint64(1); ; {
			m, err := l.stream.GetMsg(readCtx, next, jetstream.WithGetMsgSubject(datacenter.AlertsSubject))
			switch {
			case readCtx.Err() != nil:
				return
			case errors.Is(err, jetstream.ErrMsgNotFound):
				select {
				case <-readCtx.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			case err == nil:
				err = l.add(m.Sequence, m.Header.Get(datacenter.TypenameHeader), m.Data)
				next = m.Sequence + 1
			}
			if err != nil {
				l.mu.Lock()
				l.mu.err = cmpOr(l.mu.err, err)
				l.mu.Unlock()
				return
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	return l
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (l *alertLog) add(seq uint64, typename string, data []byte) error {
	line, err := datacenter.DescribeAlert(typename, data)
	if err != nil {
		return fmt.Errorf("alert %d: %w", seq, err)
	}
	v := sdk.TypedValue{Typename: typename, Bytes: data}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.mu.snap
	s.lastSeq = seq
	s.lines = append(s.lines, line)
	switch typename {
	case datacenter.ServerAlertType.Typename():
		a, err := sdk.Decode(datacenter.ServerAlertType, v)
		s.serverAlerts = append(s.serverAlerts, a)
		return err
	case datacenter.RackAlertType.Typename():
		a, err := sdk.Decode(datacenter.RackAlertType, v)
		s.rackAlerts = append(s.rackAlerts, a)
		return err
	default:
		a, err := sdk.Decode(datacenter.RackOkType, v)
		s.rackOks = append(s.rackOks, a)
		return err
	}
}

// await waits until cond accepts the alerts read so far and returns them,
// failing with cond's last error after a bound that only guards against a
// hang.
func (l *alertLog) await(t *testing.T, what string, cond func(alertSnapshot) error) alertSnapshot {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		snap, rerr := l.mu.snap, l.mu.err
		l.mu.Unlock()
		if rerr != nil {
			t.Fatalf("reading the alerts: %v", rerr)
		}
		err := cond(snap)
		if err == nil {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v; the alerts:\n%s", what, err, snap)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// String lists the alerts, one line each.
func (s alertSnapshot) String() string {
	if len(s.lines) == 0 {
		return "(none)"
	}
	return strings.Join(s.lines, "\n")
}

// opened returns the servers of rack with an alert opening an incident of
// kind, sorted, with repeats.
func (s alertSnapshot) opened(rack string, kind datacenter.Kind) []string {
	return s.servers(rack, kind, datacenterv1.AlertStatus_ALERT_STATUS_OPEN)
}

// resolved returns the servers of rack with an alert resolving an
// incident of kind, sorted, with repeats.
func (s alertSnapshot) resolved(rack string, kind datacenter.Kind) []string {
	return s.servers(rack, kind, datacenterv1.AlertStatus_ALERT_STATUS_RESOLVED)
}

func (s alertSnapshot) servers(rack string, kind datacenter.Kind, status datacenterv1.AlertStatus) []string {
	var out []string
	for _, a := range s.serverAlerts {
		if a.GetRackId() == rack && datacenter.KindOf(a.GetKind()) == kind && a.GetStatus() == status {
			out = append(out, a.GetServerId())
		}
	}
	slices.Sort(out)
	return out
}
