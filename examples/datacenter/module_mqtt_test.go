package datacenter_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/examples/datacenter"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/spec"
)

// TestModuleSpecMQTT checks deploy/datacenter/module-mqtt.yaml: the topic
// the simulator's devices publish to reaches the server's twin, the device
// identity may publish there only, and the rest is module.yaml's.
func TestModuleSpecMQTT(t *testing.T) {
	m, err := spec.Load("../../deploy/datacenter/module-mqtt.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := spec.Load("../../deploy/datacenter/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range plain.Ingresses {
		if !slices.ContainsFunc(m.Ingresses, func(x router.IngressRule) bool { return x.Name == in.Name && x.Subject == in.Subject }) {
			t.Errorf("module-mqtt.yaml lacks the ingress %s of module.yaml", in.Name)
		}
	}
	subject, err := router.TopicSubject("dc1/rack-1/srv-1-3/metrics")
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(m.Ingresses, router.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	report, _ := proto.Marshal(healthy("srv-1-3", "rack-1", t0))
	got, err := r.Route("device-metrics", router.Message{Subject: subject, Data: report})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Targets) != 1 || got.Targets[0].String() != "datacenter/server/srv-1-3" || got.Typename != datacenter.ServerMetricReportType.Typename() {
		t.Errorf("an MQTT report routed to %v as %s", got.Targets, got.Typename)
	}
	devices := m.MQTTDevices()
	if len(devices) != 1 || devices[0].Name != "device" || !slices.Equal(m.DeviceSubjects(devices[0]), []string{"dc1.*.*.metrics"}) {
		t.Errorf("devices %+v", devices)
	}
	if m.MQTT.Port != spec.DefaultMQTTPort {
		t.Errorf("MQTT port %d", m.MQTT.Port)
	}
}
