package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// mqttFlags are twinflow run's flags of the MQTT gateway. They turn it on
// and override the module spec's mqtt section.
type mqttFlags struct {
	fs                           *flag.FlagSet
	host                         string
	port                         int
	tlsCert, tlsKey, tlsClientCA string
}

func addMQTTFlags(fs *flag.FlagSet) *mqttFlags {
	f := &mqttFlags{fs: fs}
	fs.IntVar(&f.port, "mqtt-port", 0, fmt.Sprintf("turn on the embedded NATS server's MQTT gateway on this port (%d is MQTT's; -1: a free port); the module spec's mqtt section turns it on too", spec.DefaultMQTTPort))
	fs.StringVar(&f.host, "mqtt-host", "", "MQTT gateway listen address (default 127.0.0.1); beyond loopback it needs -mqtt-tls-cert")
	fs.StringVar(&f.tlsCert, "mqtt-tls-cert", "", "MQTT gateway: serve TLS only, with this certificate (PEM)")
	fs.StringVar(&f.tlsKey, "mqtt-tls-key", "", "MQTT gateway: key of the TLS certificate")
	fs.StringVar(&f.tlsClientCA, "mqtt-tls-client-ca", "", "MQTT gateway: require client certificates of this CA (PEM) as well as passwords")
	return f
}

// apply turns the gateway on in module when a flag asks for it, with what
// the flags say over what the spec says.
func (f *mqttFlags) apply(module *spec.Module) {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) {
		if strings.HasPrefix(fl.Name, "mqtt-") {
			set[fl.Name] = true
		}
	})
	if module.MQTT == nil && len(set) > 0 {
		module.MQTT = &spec.MQTT{Port: spec.DefaultMQTTPort}
	}
	m := module.MQTT
	if m == nil {
		return
	}
	if set["mqtt-port"] {
		m.Port = f.port
	}
	if set["mqtt-host"] {
		m.Host = f.host
	}
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsClientCA != "" {
		m.TLS = &spec.ServerTLS{Cert: f.tlsCert, Key: f.tlsKey, ClientCA: f.tlsClientCA}
	}
}

// printMQTT says where devices connect and with which identities.
func printMQTT(w io.Writer, info runinfo.Info, module *spec.Module) {
	if info.MQTTURL == "" {
		return
	}
	fmt.Fprintf(w, "  mqtt:         %s (MQTT 3.1.1; topics become subjects: a/b/c is a.b.c)\n", info.MQTTURL)
	for _, d := range module.MQTTDevices() {
		fmt.Fprintf(w, "                device %s, password in %s, may publish to %s\n", d.Name,
			secrets.DevicePasswordFile(filepath.Join(info.DataDir, secrets.DirName), d.Name), strings.Join(module.DeviceSubjects(d), ", "))
	}
}
