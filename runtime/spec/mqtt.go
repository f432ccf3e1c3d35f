package spec

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twinflow/twinflow/router"
)

// DefaultMQTTPort is the MQTT gateway's port when none is given.
const DefaultMQTTPort = 1883

// DefaultDevice is the MQTT device identity of a module that lists none: it
// may publish to every ingress of MQTT topics.
const DefaultDevice = "device"

// MQTT configures the MQTT gateway of the embedded NATS server: MQTT 3.1.1
// clients (devices) publish to topics, which the server turns into
// subjects, which ingresses read. See router.TopicSubject for the mapping.
type MQTT struct {
	// Host is the address the gateway listens on; "" is 127.0.0.1.
	// Beyond loopback it needs TLS.
	Host string
	// Port is the gateway's port; 0 is DefaultMQTTPort.
	Port int
	// TLS, when set, makes the gateway accept only TLS connections.
	TLS *ServerTLS
	// Devices are the identities devices connect with. None: one
	// identity, DefaultDevice, that may publish to every ingress of MQTT
	// topics.
	Devices []Device
}

// ServerTLS is the certificate a listener of the runtime serves TLS with.
type ServerTLS struct {
	// Cert and Key are the PEM files of the certificate and its key.
	Cert, Key string
	// ClientCA, when set, is a PEM file of the CAs whose client
	// certificates the listener requires (mutual TLS).
	ClientCA string
}

// Device is an MQTT device identity: a user name, with a password
// generated into the data dir (<data>/secrets/mqtt/<name>.password), that
// may publish only, and only to the topics of the ingresses and topics it
// lists. MQTT clients authenticate with a user name and password: the
// protocol cannot sign a nonce as nkeys need.
type Device struct {
	// Name is the user name: [A-Za-z0-9_-]+, unique.
	Name string
	// Ingresses are the ingresses the device may publish to, by name; each
	// has a fixed typename, since an MQTT message carries no headers.
	Ingresses []string
	// Topics are more MQTT topic filters the device may publish to, each
	// within an ingress's.
	Topics []string
}

// MQTTDevices returns the device identities of the module: those listed,
// else DefaultDevice with every ingress of MQTT topics.
func (m *Module) MQTTDevices() []Device {
	if m.MQTT != nil && len(m.MQTT.Devices) > 0 {
		return m.MQTT.Devices
	}
	d := Device{Name: DefaultDevice}
	for _, in := range m.Ingresses {
		if in.Topic != "" {
			d.Ingresses = append(d.Ingresses, in.Name)
		}
	}
	return []Device{d}
}

// DeviceSubjects are the NATS subjects an MQTT device may publish to.
func (m *Module) DeviceSubjects(d Device) []string {
	var out []string
	for _, name := range d.Ingresses {
		for _, in := range m.Ingresses {
			if in.Name == name {
				out = append(out, in.Subject)
			}
		}
	}
	for _, t := range d.Topics {
		if s, err := router.TopicSubject(t); err == nil {
			out = append(out, s)
		}
	}
	return slices.Compact(out)
}

type (
	rawMQTT struct {
		Host    *string       `yaml:"host"`
		Port    *int          `yaml:"port"`
		TLS     *rawServerTLS `yaml:"tls"`
		Devices []rawDevice   `yaml:"devices"`
	}
	rawServerTLS struct {
		Cert     *string `yaml:"cert" spec:"required"`
		Key      *string `yaml:"key" spec:"required"`
		ClientCA string  `yaml:"clientCA"`
	}
	rawDevice struct {
		Name      *string  `yaml:"name" spec:"required"`
		Ingresses []string `yaml:"ingresses"`
		Topics    []string `yaml:"topics"`
	}
)

// topicIngress makes rule read the subjects of an MQTT topic filter.
func (d *decoder) topicIngress(rule *router.IngressRule, topic, at string) {
	rule.Topic = topic
	sub, err := router.TopicSubject(topic)
	if err != nil {
		d.errorf(d.lineOf(at+".topic"), at+".topic", "%v", err)
		return
	}
	rule.Subject = sub
	if rule.Typename == "" {
		d.errorf(d.lineOf(at+".topic"), at+".topic", "an ingress of MQTT topics needs a fixed typename: MQTT messages carry no headers")
	}
}

func (d *decoder) mqtt(m *Module, r *rawMQTT) {
	if r == nil || d.misfits["mqtt"] {
		return
	}
	m.MQTT = &MQTT{Host: deref(r.Host), Port: DefaultMQTTPort}
	d.atLeast(r.Port, "mqtt.port", 1, &m.MQTT.Port)
	if r.TLS != nil && !d.misfits["mqtt.tls"] {
		m.MQTT.TLS = &ServerTLS{Cert: deref(r.TLS.Cert), Key: deref(r.TLS.Key), ClientCA: r.TLS.ClientCA}
	}
	seen := map[string]int{}
	for i, rd := range r.Devices {
		at := fmt.Sprintf("mqtt.devices[%d]", i)
		if d.misfits[at] {
			continue
		}
		dev := Device{Name: deref(rd.Name), Ingresses: rd.Ingresses, Topics: rd.Topics}
		if rd.Name != nil {
			switch j, dup := seen[dev.Name]; {
			case !router.IsValidName(dev.Name):
				d.errorf(d.lineOf(at+".name"), at+".name", "device name %q must match [A-Za-z0-9_-]+", dev.Name)
			case dup:
				d.errorf(d.lineOf(at+".name"), at+".name", "duplicate device name %q (mqtt.devices[%d])", dev.Name, j)
			default:
				seen[dev.Name] = i
			}
		}
		if len(dev.Ingresses) == 0 && len(dev.Topics) == 0 {
			d.errorf(d.lineOf(at), at, "a device needs ingresses or topics to publish to")
		}
		m.MQTT.Devices = append(m.MQTT.Devices, dev)
	}
}

// checkDevices checks what the devices name against the ingresses.
func (d *decoder) checkDevices(m *Module) {
	if m.MQTT == nil {
		return
	}
	for i, dev := range m.MQTT.Devices {
		at := fmt.Sprintf("mqtt.devices[%d]", i)
		for j, name := range dev.Ingresses {
			p := fmt.Sprintf("%s.ingresses[%d]", at, j)
			k := slices.IndexFunc(m.Ingresses, func(in router.IngressRule) bool { return in.Name == name })
			switch {
			case k < 0:
				d.errorf(d.lineOf(p), p, "no ingress named %q; the ingresses are %s", name, ingressNames(m))
			case m.Ingresses[k].Typename == "":
				d.errorf(d.lineOf(p), p, "ingress %q takes its typename from a header, which MQTT messages cannot carry; give it a typename", name)
			}
		}
		for j, topic := range dev.Topics {
			p := fmt.Sprintf("%s.topics[%d]", at, j)
			sub, err := router.TopicSubject(topic)
			if err != nil {
				d.errorf(d.lineOf(p), p, "%v", err)
				continue
			}
			k := slices.IndexFunc(m.Ingresses, func(in router.IngressRule) bool { return router.SubjectWithin(sub, in.Subject) })
			switch {
			case k < 0:
				d.errorf(d.lineOf(p), p, "%q (subject %s) is not within an ingress's subjects (%s): a device may publish only to ingresses",
					topic, sub, strings.Join(IngressSubjects(m)[2:], ", "))
			case m.Ingresses[k].Typename == "":
				d.errorf(d.lineOf(p), p, "ingress %q takes its typename from a header, which MQTT messages cannot carry; give it a typename", m.Ingresses[k].Name)
			}
		}
	}
}
