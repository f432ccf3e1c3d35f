package datacenter_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

func TestServerStateSpecs(t *testing.T) {
	w := datacenter.ServerWindowState
	if w.ExpiryMode != sdk.ExpireAfterWrite || w.ExpireAfter != 15*time.Minute {
		t.Errorf("window expires %v after %v, want ExpireAfterWrite after 15m", w.ExpiryMode, w.ExpireAfter)
	}
	if h := datacenter.ServerHealthState; h.ExpiryMode != sdk.ExpireNever {
		t.Errorf("health expires (%v): a silent server would be forgotten while flagged", h.ExpiryMode)
	}
}

func TestServerWindowExpiry(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	for _, d := range []time.Duration{0, 5 * time.Minute, 14 * time.Minute, 20 * time.Minute} {
		sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(d)))
	}
	w, ok, err := sdktest.StateOf(h, serverAddr("srv-1"), datacenter.ServerWindowState)
	if err != nil || !ok {
		t.Fatalf("window: %v %v", ok, err)
	}
	if got, want := times(w), []time.Duration{5 * time.Minute, 14 * time.Minute, 20 * time.Minute}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v: the report of minute 0 is older than 15m", got, want)
	}
	// When the runtime expires the window (15 minutes without a write), the
	// twin starts a new one.
	h.ClearState(serverAddr("srv-1"), datacenter.ServerWindowState.Name)
	sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(time.Hour)))
	w, _, _ = sdktest.StateOf(h, serverAddr("srv-1"), datacenter.ServerWindowState)
	if got, want := times(w), []time.Duration{time.Hour}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
}

func TestServerAlertsWhenIncidentOpensAndResolves(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	res := sendReport(t, h, healthy("srv-1", "rack-1", t0))
	if got := alerts(t, res); len(got) != 0 {
		t.Fatalf("healthy report alerted: %v", got)
	}
	// The first report introduces the server to its rack.
	if got := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerIncidentsType); len(got) != 1 || kinds(got[0]) != "[]" {
		t.Fatalf("rack got %v, want one ServerIncidents with none open", got)
	}

	sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(5*time.Second), dropping(0.3)))
	res = sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(10*time.Second), dropping(0.3)))
	if got, want := alerts(t, res), []string{"server OPEN     rack-1/srv-1 PACKET_LOSS: mean packet drop rate 20.0% over the last 3 reports, above 5%"}; !slices.Equal(got, want) {
		t.Fatalf("alerts %q, want %q", got, want)
	}
	inc := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerIncidentsType)
	if len(inc) != 1 || kinds(inc[0]) != "[PACKET_LOSS]" || !inc[0].GetChangedAt().AsTime().Equal(t0.Add(10*time.Second)) {
		t.Fatalf("rack got %v, want PACKET_LOSS open at 10s", inc)
	}

	// While the incident stays open, nothing is repeated.
	res = sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(15*time.Second), dropping(0.3)))
	if len(res.Egress) != 0 || len(res.Sent) != 0 {
		t.Fatalf("unchanged incident repeated: %v, %v", res.Egress, res.Sent)
	}

	var last *sdktest.Result
	for i := range 3 {
		last = sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(time.Duration(20+5*i)*time.Second)))
	}
	if got := alerts(t, last); len(got) != 1 || !strings.HasPrefix(got[0], "server RESOLVED rack-1/srv-1 PACKET_LOSS") {
		t.Fatalf("alerts %q, want PACKET_LOSS resolved", got)
	}
	if inc := sentOf(t, last, rackAddr("rack-1"), datacenter.ServerIncidentsType); len(inc) != 1 || kinds(inc[0]) != "[]" {
		t.Fatalf("rack got %v, want no open incidents", inc)
	}
	hs, _, _ := sdktest.StateOf(h, serverAddr("srv-1"), datacenter.ServerHealthState)
	if len(hs.Incidents) != 0 || hs.RackID != "rack-1" || !hs.LastReportAt.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("health %+v", hs)
	}
}

func TestServerSilenceTimer(t *testing.T) {
	h := newHarness(t, datacenter.Config{SilenceTimeout: 45 * time.Second})
	self := serverAddr("srv-1")

	res := sendReport(t, h, healthy("srv-1", "rack-1", t0))
	first := checkTimer(t, res, self, 45*time.Second, 1)

	// Every report re-arms the timer with the same token: the runtime
	// replaces the pending check.
	res = sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(5*time.Second)))
	second := checkTimer(t, res, self, 45*time.Second, 2)

	// A check that was already delivered before the replacement is stale.
	res = invoke(t, h, self, datacenter.SilenceCheckType, first, sdktest.WithCaller(self))
	if len(res.Egress)+len(res.Sent)+len(res.Delayed) != 0 {
		t.Fatalf("stale check had effects: %+v", res)
	}

	// The latest check fires: the server has been silent.
	res = invoke(t, h, self, datacenter.SilenceCheckType, second, sdktest.WithCaller(self))
	want := "server OPEN     rack-1/srv-1 NO_REPORTS: no report for 45s; the last one was taken at 2026-03-01T12:00:05Z"
	if got := alerts(t, res); !slices.Equal(got, []string{want}) {
		t.Fatalf("alerts %q, want %q", got, want)
	}
	inc := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerIncidentsType)
	if len(inc) != 1 || kinds(inc[0]) != "[NO_REPORTS]" || !inc[0].GetChangedAt().AsTime().Equal(clockNow) {
		t.Fatalf("rack got %v, want NO_REPORTS at the clock's time", inc)
	}
	if len(res.Delayed) != 0 {
		t.Errorf("a silent server re-armed its timer: %v", res.Delayed)
	}
	// Delivered twice, the check alerts once.
	res = invoke(t, h, self, datacenter.SilenceCheckType, second, sdktest.WithCaller(self))
	if len(res.Egress) != 0 {
		t.Fatalf("second delivery alerted again: %v", alerts(t, res))
	}

	// The next report resolves NO_REPORTS and re-arms.
	res = sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(2*time.Minute)))
	if got := alerts(t, res); len(got) != 1 || !strings.HasPrefix(got[0], "server RESOLVED rack-1/srv-1 NO_REPORTS") {
		t.Fatalf("alerts %q, want NO_REPORTS resolved", got)
	}
	checkTimer(t, res, self, 45*time.Second, 3)
}

// checkTimer checks that res armed exactly one silence check of the given
// sequence, and returns it.
func checkTimer(t *testing.T, res *sdktest.Result, self sdk.Address, delay time.Duration, seq uint64) *datacenterv1.SilenceCheck {
	t.Helper()
	if len(res.Delayed) != 1 {
		t.Fatalf("delayed %v, want one silence check", res.Delayed)
	}
	d := res.Delayed[0]
	if d.To != self || d.Delay != delay || d.CancellationToken != datacenter.SilenceToken {
		t.Fatalf("delayed to %s after %v with token %q, want to %s after %v with %q", d.To, d.Delay, d.CancellationToken, self, delay, datacenter.SilenceToken)
	}
	c, err := sdk.Decode(datacenter.SilenceCheckType, d.Value)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetSequence() != seq {
		t.Fatalf("check sequence %d, want %d", c.GetSequence(), seq)
	}
	return c
}

func TestServerCommissioning(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	self := serverAddr("srv-1")
	res := invoke(t, h, self, datacenter.CommissionServerType, &datacenterv1.CommissionServer{ServerId: "srv-1", RackId: "rack-1"})
	// A commissioned server that never reports must be noticed too.
	checkTimer(t, res, self, 30*time.Second, 1)
	if inc := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerIncidentsType); len(inc) != 1 || kinds(inc[0]) != "[]" {
		t.Fatalf("rack got %v, want the server announced", inc)
	}
	res = invoke(t, h, self, datacenter.SilenceCheckType, &datacenterv1.SilenceCheck{Sequence: 1})
	if got := alerts(t, res); len(got) != 1 || !strings.Contains(got[0], "NO_REPORTS: no report for 30s since commissioning") {
		t.Fatalf("alerts %q", got)
	}

	// Commissioning again in the same rack changes nothing.
	res = invoke(t, h, self, datacenter.CommissionServerType, &datacenterv1.CommissionServer{ServerId: "srv-1", RackId: "rack-1"})
	if len(res.Sent)+len(res.Delayed)+len(res.Egress) != 0 {
		t.Fatalf("recommissioning had effects: %+v", res)
	}
	// In another rack, the server moves.
	res = invoke(t, h, self, datacenter.CommissionServerType, &datacenterv1.CommissionServer{ServerId: "srv-1", RackId: "rack-2"})
	if left := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerDecommissionedType); len(left) != 1 {
		t.Fatalf("old rack got %v, want ServerDecommissioned", res.Sent)
	}
	if inc := sentOf(t, res, rackAddr("rack-2"), datacenter.ServerIncidentsType); len(inc) != 1 || kinds(inc[0]) != "[NO_REPORTS]" {
		t.Fatalf("new rack got %v, want the server with its open incident", res.Sent)
	}
}

func TestServerDecommissionCancelsTimerAndClearsState(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	self := serverAddr("srv-1")
	for i := range 3 {
		sendReport(t, h, healthy("srv-1", "rack-1", t0.Add(time.Duration(i)*5*time.Second), dropping(0.5)))
	}
	res := invoke(t, h, self, datacenter.DecommissionServerType, &datacenterv1.DecommissionServer{ServerId: "srv-1"})

	if !slices.Equal(res.Cancelled, []string{datacenter.SilenceToken}) {
		t.Errorf("cancelled %q, want the silence timer", res.Cancelled)
	}
	if _, ok, _ := sdktest.StateOf(h, self, datacenter.ServerWindowState); ok {
		t.Error("window still there")
	}
	if _, ok, _ := sdktest.StateOf(h, self, datacenter.ServerHealthState); ok {
		t.Error("health still there")
	}
	left := sentOf(t, res, rackAddr("rack-1"), datacenter.ServerDecommissionedType)
	if len(left) != 1 || left[0].GetServerId() != "srv-1" || !left[0].GetLeftAt().AsTime().Equal(clockNow) {
		t.Fatalf("rack got %v, want ServerDecommissioned", res.Sent)
	}
	if got := alerts(t, res); len(got) != 1 || !strings.Contains(got[0], "RESOLVED rack-1/srv-1 PACKET_LOSS (open since") ||
		!strings.Contains(got[0], "server decommissioned; was: mean packet drop rate") {
		t.Fatalf("alerts %q, want the open incident closed", got)
	}

	// A check that was on its way finds nothing to watch.
	res = invoke(t, h, self, datacenter.SilenceCheckType, &datacenterv1.SilenceCheck{Sequence: 1})
	if len(res.Egress)+len(res.Sent) != 0 {
		t.Fatalf("check after decommissioning had effects: %+v", res)
	}
	// Decommissioning twice is harmless.
	res = invoke(t, h, self, datacenter.DecommissionServerType, &datacenterv1.DecommissionServer{ServerId: "srv-1"})
	if len(res.Sent)+len(res.Egress) != 0 {
		t.Fatalf("second decommissioning had effects: %+v", res)
	}
}

func TestServerRejectsMessagesItCannotUse(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	tests := []struct {
		name string
		msg  sdk.TypedValue
	}{
		{"report of another server", encode(t, datacenter.ServerMetricReportType, healthy("srv-2", "rack-1", t0))},
		{"report without time", encode(t, datacenter.ServerMetricReportType, &datacenterv1.ServerMetricReport{ServerId: "srv-1", RackId: "rack-1"})},
		{"report without rack of an unknown server", encode(t, datacenter.ServerMetricReportType, healthy("srv-1", "", t0))},
		{"commissioning without rack", encode(t, datacenter.CommissionServerType, &datacenterv1.CommissionServer{ServerId: "srv-1"})},
		{"unknown type", encode(t, sdk.StringType, "hello")},
		{"garbage", sdk.TypedValue{Typename: datacenter.ServerMetricReportType.Typename(), Bytes: []byte{0xff, 0xff}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Invoke(serverAddr("srv-1"), tt.msg)
			var e *sdktest.Error
			if !errorAs(err, &e) || !e.Terminal {
				t.Fatalf("err = %v, want a terminal error", err)
			}
		})
	}
}
