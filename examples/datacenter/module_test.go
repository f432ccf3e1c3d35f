package datacenter_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/spec"
)

// TestModuleSpec checks deploy/datacenter/module.yaml with the runtime's
// own parser and router, and against the names the twins and the simulator
// use.
func TestModuleSpec(t *testing.T) {
	if datacenter.TypenameHeader != router.TypenameHeader {
		t.Errorf("TypenameHeader %q, want the router's %q", datacenter.TypenameHeader, router.TypenameHeader)
	}
	if datacenter.ReplyToHeader != router.ReplyToHeader {
		t.Errorf("ReplyToHeader %q, want the router's %q", datacenter.ReplyToHeader, router.ReplyToHeader)
	}
	if want, _ := router.DirectSubject(datacenter.DataCenterFunction, "dc"); datacenter.DirectSubject(datacenter.DataCenterFunction, "dc") != want {
		t.Errorf("DirectSubject = %q, want %q", datacenter.DirectSubject(datacenter.DataCenterFunction, "dc"), want)
	}
	m, err := spec.Load("../../deploy/datacenter/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{datacenter.ServerFunction, datacenter.RackFunction, datacenter.DataCenterFunction} {
		if ep, ok := m.EndpointFor(fn); !ok || ep.URL != "http://127.0.0.1:8000" {
			t.Errorf("%s is served by %+v, want the endpoint at http://127.0.0.1:8000", fn, ep)
		}
	}
	egresses := map[string]router.EgressRule{}
	for _, e := range m.Egresses {
		egresses[e.Name] = e
	}
	if e := egresses[datacenter.AlertsEgress]; e.Subject != datacenter.AlertsSubject || e.Delivery != router.ExactlyOnce {
		t.Errorf("egress %q is %+v, want %s exactly-once", datacenter.AlertsEgress, e, datacenter.AlertsSubject)
	}

	r, err := router.New(m.Ingresses, router.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	report, _ := proto.Marshal(healthy("srv-1-3", "rack-1", t0))
	got, err := r.Route("metrics", router.Message{Subject: datacenter.MetricsSubject("rack-1", "srv-1-3"), Data: report})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Targets) != 1 || got.Targets[0].String() != "datacenter/server/srv-1-3" || got.Typename != datacenter.ServerMetricReportType.Typename() {
		t.Errorf("metrics routed to %v as %s", got.Targets, got.Typename)
	}

	commission, _ := proto.Marshal(&datacenterv1.CommissionServer{ServerId: "srv-1-3", RackId: "rack-1"})
	got, err = r.Route("provisioning", router.Message{
		Subject: datacenter.ProvisioningSubject("rack-1"),
		Header: map[string][]string{
			router.TypenameHeader:   {datacenter.CommissionServerType.Typename()},
			datacenter.ServerHeader: {"srv-1-3"},
		},
		Data: commission,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Targets) != 1 || got.Targets[0].String() != "datacenter/server/srv-1-3" || got.Typename != datacenter.CommissionServerType.Typename() {
		t.Errorf("provisioning routed to %v as %s", got.Targets, got.Typename)
	}
}
