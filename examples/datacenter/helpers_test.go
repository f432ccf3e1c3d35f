package datacenter_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

// t0 is when the tests' reports start; clockNow is what Config.Now returns.
var (
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clockNow = time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
)

// newHarness returns a harness for the twins registered with cfg and a
// fixed clock.
func newHarness(t *testing.T, cfg datacenter.Config) *sdktest.Harness {
	t.Helper()
	cfg.Now = func() time.Time { return clockNow }
	reg := sdk.NewRegistry()
	if err := datacenter.Register(reg, cfg); err != nil {
		t.Fatal(err)
	}
	return sdktest.New(reg)
}

func serverAddr(id string) sdk.Address { return sdk.Address{Type: datacenter.ServerFunction, ID: id} }
func rackAddr(id string) sdk.Address   { return sdk.Address{Type: datacenter.RackFunction, ID: id} }
func dcAddr() sdk.Address              { return sdk.Address{Type: datacenter.DataCenterFunction, ID: "dc"} }

// healthy returns a healthy report of server in rack taken at at, changed
// by the options.
func healthy(server, rack string, at time.Time, opts ...func(*datacenterv1.ServerMetricReport)) *datacenterv1.ServerMetricReport {
	r := &datacenterv1.ServerMetricReport{
		ServerId:           server,
		RackId:             rack,
		ReportedAt:         timestamppb.New(at),
		CpuUtilization:     0.3,
		MemoryUtilization:  0.5,
		DiskUsed:           0.4,
		NetworkRxMbps:      400,
		NetworkTxMbps:      300,
		PacketDropRate:     0.001,
		PowerSupplyVolts:   12,
		PowerWatts:         250,
		TemperatureCelsius: 22,
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func dropping(rate float64) func(*datacenterv1.ServerMetricReport) {
	return func(r *datacenterv1.ServerMetricReport) { r.PacketDropRate = rate }
}

func encode[T any](t *testing.T, typ sdk.Type[T], v T) sdk.TypedValue {
	t.Helper()
	tv, err := sdk.Encode(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return tv
}

// invoke delivers a message and fails the test when the function fails.
func invoke[T any](t *testing.T, h *sdktest.Harness, to sdk.Address, typ sdk.Type[T], v T, opts ...sdktest.InvokeOption) *sdktest.Result {
	t.Helper()
	res, err := h.Invoke(to, encode(t, typ, v), opts...)
	if err != nil {
		t.Fatalf("invoke %s: %v", to, err)
	}
	return res
}

func sendReport(t *testing.T, h *sdktest.Harness, r *datacenterv1.ServerMetricReport) *sdktest.Result {
	t.Helper()
	return invoke(t, h, serverAddr(r.GetServerId()), datacenter.ServerMetricReportType, r)
}

// alerts describes the egress records of a result, one line each, without
// the time of day.
func alerts(t *testing.T, res *sdktest.Result) []string {
	t.Helper()
	var out []string
	for _, e := range res.Egress {
		if e.Egress != datacenter.AlertsEgress {
			t.Errorf("record on egress %q, want %q", e.Egress, datacenter.AlertsEgress)
		}
		line, err := datacenter.DescribeAlert(e.Value.Typename, e.Value.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := cutClock(line)
		out = append(out, rest)
	}
	return out
}

// cutClock drops the leading HH:MM:SS of a described alert.
func cutClock(line string) (string, string, bool) {
	if len(line) < 9 {
		return "", line, false
	}
	return line[:8], line[9:], true
}

// sentOf decodes the messages of a result sent to function type typ.
func sentOf[T proto.Message](t *testing.T, res *sdktest.Result, to sdk.Address, typ sdk.Type[T]) []T {
	t.Helper()
	var out []T
	for _, m := range res.Sent {
		if m.To != to || m.Value.Typename != typ.Typename() {
			continue
		}
		v, err := sdk.Decode(typ, m.Value)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// kinds renders incident kinds of a ServerIncidents message.
func kinds(m *datacenterv1.ServerIncidents) string {
	var ks []datacenter.Kind
	for _, k := range m.GetOpen() {
		ks = append(ks, datacenter.KindOf(k))
	}
	return fmt.Sprint(ks)
}

func errorAs(err error, target any) bool { return errors.As(err, target) }
