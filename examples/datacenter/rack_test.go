package datacenter_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

// rackOf returns n healthy servers srv-0 ... srv-<n-1>.
func rackOf(n int) map[string][]datacenter.Kind {
	servers := make(map[string][]datacenter.Kind)
	for i := range n {
		servers[fmt.Sprintf("srv-%d", i)] = nil
	}
	return servers
}

func with(servers map[string][]datacenter.Kind, k datacenter.Kind, ids ...int) map[string][]datacenter.Kind {
	for _, i := range ids {
		id := fmt.Sprintf("srv-%d", i)
		servers[id] = append(servers[id], k)
	}
	return servers
}

func TestCorrelate(t *testing.T) {
	m := datacenter.DefaultCorrelationModel()
	tests := []struct {
		name    string
		servers map[string][]datacenter.Kind
		want    datacenter.RackKind
		ids     string
	}{
		{"healthy", rackOf(8), "", ""},
		{"one server drops packets", with(rackOf(8), datacenter.PacketLoss, 3), "", ""},
		{"three of eight drop packets", with(rackOf(8), datacenter.PacketLoss, 1, 2, 3), datacenter.MultipleServerFailures, "srv-1 srv-2 srv-3"},
		{"half the rack drops packets", with(rackOf(8), datacenter.PacketLoss, 0, 2, 4, 6), datacenter.TORSwitchFailure, "srv-0 srv-2 srv-4 srv-6"},
		{"all drop packets", with(rackOf(4), datacenter.PacketLoss, 0, 1, 2, 3), datacenter.TORSwitchFailure, "srv-0 srv-1 srv-2 srv-3"},
		{"the only server of a rack drops packets", with(rackOf(1), datacenter.PacketLoss, 0), "", ""},
		{"most servers on low voltage", with(rackOf(6), datacenter.PowerDegraded, 0, 1, 2, 5), datacenter.PowerDegradation, "srv-0 srv-1 srv-2 srv-5"},
		{"switch failure wins over power", with(with(rackOf(4), datacenter.PowerDegraded, 0, 1, 2), datacenter.PacketLoss, 1, 2), datacenter.TORSwitchFailure, "srv-1 srv-2"},
		{"unrelated incidents", with(with(with(rackOf(10), datacenter.DiskFailing, 1), datacenter.HighCPU, 4), datacenter.NoReports, 7), datacenter.MultipleServerFailures, "srv-1 srv-4 srv-7"},
		{"two unrelated incidents", with(with(rackOf(10), datacenter.DiskFailing, 1), datacenter.HighCPU, 4), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := m.Correlate(tt.servers)
			if ok != (tt.want != "") || c.Kind != tt.want || strings.Join(c.Servers, " ") != tt.ids {
				t.Fatalf("Correlate = %+v, %v; want %q of %q", c, ok, tt.want, tt.ids)
			}
			if ok && c.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

// immediate makes racks correlate at once, for tests of the rules.
var immediate = datacenter.Config{CorrelationDelay: -1}

// incidents is a ServerIncidents message from server of rack-1 at second s.
func incidents(server string, s int, open ...datacenterv1.IncidentKind) *datacenterv1.ServerIncidents {
	return &datacenterv1.ServerIncidents{ServerId: server, RackId: "rack-1", Open: open, ChangedAt: timestamppb.New(t0.Add(time.Duration(s) * time.Second))}
}

const packetLoss = datacenterv1.IncidentKind_INCIDENT_KIND_PACKET_LOSS

func TestRackCorrelatesSwitchFailure(t *testing.T) {
	h := newHarness(t, immediate)
	rack := rackAddr("rack-1")
	tell := func(m *datacenterv1.ServerIncidents) *sdktest.Result {
		t.Helper()
		return invoke(t, h, rack, datacenter.ServerIncidentsType, m, sdktest.WithCaller(serverAddr(m.GetServerId())))
	}
	for i := range 8 {
		tell(incidents(fmt.Sprintf("srv-%d", i), 0))
	}
	// One server losing packets is that server's problem.
	res := tell(incidents("srv-0", 10, packetLoss))
	if len(res.Sent)+len(res.Egress) != 0 {
		t.Fatalf("one lossy server raised a rack alert: %+v", res)
	}
	tell(incidents("srv-1", 11, packetLoss))
	tell(incidents("srv-2", 12, packetLoss))
	// Half of the rack: the switch.
	res = tell(incidents("srv-3", 13, packetLoss))
	sent := sentOf(t, res, dcAddr(), datacenter.RackAlertType)
	if len(sent) != 1 {
		t.Fatalf("data center got %v, want one RackAlert", res.Sent)
	}
	a := sent[0]
	if datacenter.RackKindOf(a.GetKind()) != datacenter.TORSwitchFailure || !slices.Equal(a.GetServerIds(), []string{"srv-0", "srv-1", "srv-2", "srv-3"}) ||
		a.GetKnownServers() != 8 || !a.GetOpenedAt().AsTime().Equal(t0.Add(13*time.Second)) {
		t.Fatalf("rack alert %v", a)
	}
	want := "rack   ALERT    rack-1 TOR_SWITCH_FAILURE [srv-0 srv-1 srv-2 srv-3]: 4 of 8 servers have PACKET_LOSS: the top-of-rack switch is their common network path"
	if got := alerts(t, res); !slices.Equal(got, []string{want}) {
		t.Fatalf("alerts %q, want %q", got, want)
	}
	st, _, _ := sdktest.StateOf(h, rack, datacenter.RackStateSpec)
	if st.Histogram[datacenter.PacketLoss] != 4 || len(st.Servers) != 8 || st.Alert == nil {
		t.Fatalf("rack state %+v", st)
	}

	// One more server: the alert changes, and keeps its opening time.
	res = tell(incidents("srv-4", 14, packetLoss))
	sent = sentOf(t, res, dcAddr(), datacenter.RackAlertType)
	if len(sent) != 1 || len(sent[0].GetServerIds()) != 5 || !sent[0].GetOpenedAt().AsTime().Equal(t0.Add(13*time.Second)) ||
		!sent[0].GetUpdatedAt().AsTime().Equal(t0.Add(14*time.Second)) {
		t.Fatalf("data center got %v, want the alert updated with 5 servers", sent)
	}
	// A change that leaves the correlation as it is says nothing.
	res = tell(incidents("srv-7", 15, datacenterv1.IncidentKind_INCIDENT_KIND_HIGH_CPU))
	if len(res.Sent)+len(res.Egress) != 0 {
		t.Fatalf("unchanged correlation reported: %+v", res)
	}
	tell(incidents("srv-7", 16))

	// The switch comes back: servers recover one by one. Below half the
	// rack it is no longer the switch, and three failing servers are still
	// suspicious; below three the rack is OK.
	for i := range 3 {
		tell(incidents(fmt.Sprintf("srv-%d", i), 20+i))
	}
	st, _, _ = sdktest.StateOf(h, rack, datacenter.RackStateSpec)
	if st.Alert != nil {
		t.Fatalf("alert %+v still open with two lossy servers", st.Alert)
	}
	if st.Histogram[datacenter.PacketLoss] != 2 {
		t.Fatalf("histogram %v", st.Histogram)
	}
}

func TestRackOkWhenIncidentsClear(t *testing.T) {
	h := newHarness(t, immediate)
	rack := rackAddr("rack-1")
	for i := range 2 {
		invoke(t, h, rack, datacenter.ServerIncidentsType, incidents(fmt.Sprintf("srv-%d", i), 0, packetLoss))
	}
	st, _, _ := sdktest.StateOf(h, rack, datacenter.RackStateSpec)
	if st.Alert == nil || st.Alert.Kind != datacenter.TORSwitchFailure {
		t.Fatalf("alert %+v, want a switch failure", st.Alert)
	}
	res := invoke(t, h, rack, datacenter.ServerIncidentsType, incidents("srv-0", 30))
	ok := sentOf(t, res, dcAddr(), datacenter.RackOkType)
	if len(ok) != 1 || ok[0].GetRackId() != "rack-1" || !ok[0].GetClearedAt().AsTime().Equal(t0.Add(30*time.Second)) {
		t.Fatalf("data center got %v, want RackOk", res.Sent)
	}
	if got := alerts(t, res); !slices.Equal(got, []string{"rack   OK       rack-1"}) {
		t.Fatalf("alerts %q", got)
	}

	// Servers leaving: the rack forgets them, and with none left, itself.
	invoke(t, h, rack, datacenter.ServerDecommissionedType, &datacenterv1.ServerDecommissioned{ServerId: "srv-0", RackId: "rack-1"})
	st, _, _ = sdktest.StateOf(h, rack, datacenter.RackStateSpec)
	if _, known := st.Servers["srv-0"]; known || len(st.Servers) != 1 {
		t.Fatalf("servers %v", st.Servers)
	}
	invoke(t, h, rack, datacenter.ServerDecommissionedType, &datacenterv1.ServerDecommissioned{ServerId: "srv-1", RackId: "rack-1"})
	if _, ok, _ := sdktest.StateOf(h, rack, datacenter.RackStateSpec); ok {
		t.Fatal("an empty rack kept its state")
	}
}

func TestRackDecommissioningCanClearTheAlert(t *testing.T) {
	h := newHarness(t, immediate)
	rack := rackAddr("rack-1")
	for i := range 2 {
		invoke(t, h, rack, datacenter.ServerIncidentsType, incidents(fmt.Sprintf("srv-%d", i), 0, packetLoss))
	}
	res := invoke(t, h, rack, datacenter.ServerDecommissionedType, &datacenterv1.ServerDecommissioned{ServerId: "srv-0", RackId: "rack-1"})
	if len(sentOf(t, res, dcAddr(), datacenter.RackOkType)) != 1 {
		t.Fatalf("data center got %v, want RackOk: one lossy server is no switch failure", res.Sent)
	}
}

func TestRackWaitsForIncidentsToSettle(t *testing.T) {
	h := newHarness(t, datacenter.Config{CorrelationDelay: 3 * time.Second})
	rack := rackAddr("rack-1")
	var armed []sdktest.Delayed
	for i := range 4 {
		res := invoke(t, h, rack, datacenter.ServerIncidentsType, incidents(fmt.Sprintf("srv-%d", i), 0))
		armed = append(armed, res.Delayed...)
	}
	// Servers joining are changes too, but only the first arms the check.
	if len(armed) != 1 {
		t.Fatalf("armed %+v, want one check", armed)
	}
	res, err := h.Invoke(rack, armed[0].Value, sdktest.WithCaller(rack))
	if err != nil || len(res.Sent)+len(res.Egress) != 0 {
		t.Fatalf("check of a healthy rack: %+v, %v", res, err)
	}

	// The first change of the next three arms the next check.
	res = invoke(t, h, rack, datacenter.ServerIncidentsType, incidents("srv-0", 10, packetLoss))
	if len(res.Delayed) != 1 || res.Delayed[0].To != rack || res.Delayed[0].Delay != 3*time.Second ||
		res.Delayed[0].CancellationToken != datacenter.CorrelationToken || res.Delayed[0].Value.Typename != datacenter.CorrelationCheckType.Typename() {
		t.Fatalf("delayed %+v, want a correlation check in 3s", res.Delayed)
	}
	check := res.Delayed[0].Value
	for i := 1; i < 3; i++ {
		res = invoke(t, h, rack, datacenter.ServerIncidentsType, incidents(fmt.Sprintf("srv-%d", i), 10+i, packetLoss))
		if len(res.Delayed)+len(res.Sent)+len(res.Egress) != 0 {
			t.Fatalf("a change during the wait had effects: %+v", res)
		}
	}
	// The check reports the settled picture once: three of four servers.
	res, err = h.Invoke(rack, check, sdktest.WithCaller(rack))
	if err != nil {
		t.Fatal(err)
	}
	sent := sentOf(t, res, dcAddr(), datacenter.RackAlertType)
	if len(sent) != 1 || len(sent[0].GetServerIds()) != 3 || !sent[0].GetOpenedAt().AsTime().Equal(t0.Add(12*time.Second)) {
		t.Fatalf("data center got %v, want one alert of 3 servers dated by the last change", sent)
	}
	if got := alerts(t, res); len(got) != 1 {
		t.Fatalf("alerts %q, want one", got)
	}
	st, _, _ := sdktest.StateOf(h, rack, datacenter.RackStateSpec)
	if st.CheckPending {
		t.Fatal("check still pending after it ran")
	}
	// The next change arms a new check.
	res = invoke(t, h, rack, datacenter.ServerIncidentsType, incidents("srv-0", 20))
	if len(res.Delayed) != 1 {
		t.Fatalf("delayed %+v, want a new check", res.Delayed)
	}
}
