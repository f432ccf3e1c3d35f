package spec

import (
	"reflect"
	"strings"
	"testing"

	"github.com/twinflow/twinflow/router"
)

const mqttSpec = `
endpoints:
  - functions: dc/*
    url: http://127.0.0.1:8000
ingresses:
  - name: devices
    topic: dc1/+/+/metrics
    typename: dc/Report
    targets:
      - function: dc/server
        id: { subjectToken: 2 }
  - name: nats
    subject: dc.provisioning.*
    targets:
      - function: dc/server
        id: { header: X-Server }
mqtt:
  port: 1884
  tls: { cert: certs/mqtt.pem, key: certs/mqtt-key.pem }
  devices:
    - name: rack-1
      topics: [dc1/rack-1/+/metrics]
    - name: all
      ingresses: [devices]
`

func TestMQTT(t *testing.T) {
	m, err := Parse("m.yaml", []byte(mqttSpec))
	if err != nil {
		t.Fatal(err)
	}
	if in := m.Ingresses[0]; in.Topic != "dc1/+/+/metrics" || in.Subject != "dc1.*.*.metrics" {
		t.Errorf("the topic ingress: %+v", in)
	}
	want := &MQTT{Port: 1884, TLS: &ServerTLS{Cert: "certs/mqtt.pem", Key: "certs/mqtt-key.pem"},
		Devices: []Device{{Name: "rack-1", Topics: []string{"dc1/rack-1/+/metrics"}}, {Name: "all", Ingresses: []string{"devices"}}}}
	if !reflect.DeepEqual(m.MQTT, want) {
		t.Errorf("mqtt: %+v, want %+v", m.MQTT, want)
	}
	if got := m.DeviceSubjects(m.MQTT.Devices[0]); !reflect.DeepEqual(got, []string{"dc1.rack-1.*.metrics"}) {
		t.Errorf("subjects of rack-1: %v", got)
	}
	if got := m.DeviceSubjects(m.MQTT.Devices[1]); !reflect.DeepEqual(got, []string{"dc1.*.*.metrics"}) {
		t.Errorf("subjects of all: %v", got)
	}
	// Without devices, one that may publish to the topic ingresses.
	m.MQTT.Devices = nil
	if got := m.MQTTDevices(); !reflect.DeepEqual(got, []Device{{Name: DefaultDevice, Ingresses: []string{"devices"}}}) {
		t.Errorf("default devices: %+v", got)
	}
	if _, err := router.New(m.Ingresses, router.Limits{}); err != nil {
		t.Error(err)
	}
}

func TestMQTTErrors(t *testing.T) {
	for _, tt := range []struct{ name, from, to, want string }{
		{"subject and topic", "    topic: dc1/+/+/metrics\n", "    topic: dc1/+/+/metrics\n    subject: dc1.x\n",
			"m.yaml:7: ingresses[0].topic: set subject (NATS) or topic (MQTT), not both"},
		{"a topic without typename", "    typename: dc/Report\n", "",
			"m.yaml:7: ingresses[0].topic: an ingress of MQTT topics needs a fixed typename: MQTT messages carry no headers"},
		{"a bad topic", "dc1/+/+/metrics", "dc1/#/metrics", "m.yaml:7: ingresses[0].topic: topic \"dc1/#/metrics\": # must be the last level"},
		{"an unknown ingress", "ingresses: [devices]", "ingresses: [devicez]", `m.yaml:24: mqtt.devices[1].ingresses[0]: no ingress named "devicez"`},
		{"an ingress with a header typename", "ingresses: [devices]", "ingresses: [nats]",
			`m.yaml:24: mqtt.devices[1].ingresses[0]: ingress "nats" takes its typename from a header, which MQTT messages cannot carry`},
		{"a topic outside the ingresses", "topics: [dc1/rack-1/+/metrics]", "topics: [dc2/#]",
			`m.yaml:22: mqtt.devices[0].topics[0]: "dc2/#" (subject dc2.>) is not within an ingress's subjects`},
		{"a device without rights", "      ingresses: [devices]\n", "", "m.yaml:23: mqtt.devices[1]: a device needs ingresses or topics to publish to"},
		{"a duplicate device", "name: all", "name: rack-1", `m.yaml:23: mqtt.devices[1].name: duplicate device name "rack-1"`},
		{"tls without key", ", key: certs/mqtt-key.pem", "", "m.yaml:19: mqtt.tls: key is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := strings.Replace(mqttSpec, tt.from, tt.to, 1)
			if spec == mqttSpec {
				t.Fatalf("%q is not in the spec", tt.from)
			}
			_, err := Parse("m.yaml", []byte(spec))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse: %v\nwant %s", err, tt.want)
			}
		})
	}
}
