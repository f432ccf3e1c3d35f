package runtime

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"

	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// MQTT devices reach ingresses through the embedded NATS server's MQTT
// gateway. Each device identity of the module (spec.Module.MQTTDevices) is
// a user of the server with a password from the data dir, allowed to
// connect over MQTT only, to publish only to the subjects of its ingresses
// and topics, and to subscribe to nothing. A QoS 1 publish is acknowledged
// (PUBACK) once the gateway has stored it in JetStream; the ingress stream
// captures the same publish.

// mqttGateway returns the MQTT gateway's options and the device users, or
// nil when the module turns no gateway on.
func (e *Engine) mqttGateway() (*natsbus.MQTTOptions, []natsbus.User, error) {
	m := e.cfg.Module.MQTT
	if m == nil {
		return nil, nil, nil
	}
	opts := &natsbus.MQTTOptions{Host: m.Host, Port: m.Port}
	if m.TLS != nil {
		cfg, err := serverTLS(m.TLS.Cert, m.TLS.Key, m.TLS.ClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("MQTT gateway TLS: %w", err)
		}
		if m.TLS.ClientCA != "" {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		opts.TLS = cfg
	}
	devices := e.cfg.Module.MQTTDevices()
	names := make([]string, len(devices))
	for i, d := range devices {
		names[i] = d.Name
	}
	passwords, err := secrets.EnsureDevices(e.cfg.DataDir, names)
	if err != nil {
		return nil, nil, err
	}
	var users []natsbus.User
	for _, d := range devices {
		subjects := e.cfg.Module.DeviceSubjects(d)
		users = append(users, natsbus.User{
			Name: d.Name, Password: passwords[d.Name].Password,
			Publish:   natsbus.Rules{Allow: subjects, Deny: inboxSubjects(e.cfg.Module)},
			Subscribe: natsbus.Rules{}, // nothing
		})
		e.log.Info("MQTT device identity", "user", d.Name, "password_file", passwords[d.Name].PasswordFile, "may_publish", subjects)
	}
	return opts, users, nil
}

// validateMQTT checks the MQTT gateway's settings.
func validateMQTT(c *Config) []error {
	if c.Module == nil || c.Module.MQTT == nil {
		return nil
	}
	m := c.Module.MQTT
	var errs []error
	if m.Port == 0 || m.Port < -1 || m.Port > 65535 {
		errs = append(errs, fmt.Errorf("the MQTT gateway's port is %d: give a port, or -1 for a free one", m.Port))
	}
	if c.NATSURL != "" {
		errs = append(errs, errors.New("the MQTT gateway is the embedded NATS server's; with an external NATS server, turn on its own (mqtt block of nats-server.conf)"))
	}
	if m.Host != "" && !isLoopback(m.Host) && m.TLS == nil {
		errs = append(errs, fmt.Errorf("the MQTT gateway would listen on %s, beyond this machine, without TLS: give it a certificate (twinflow run -mqtt-tls-cert and -mqtt-tls-key, or mqtt.tls in the module spec)", m.Host))
	}
	if m.TLS != nil && (m.TLS.Cert == "" || m.TLS.Key == "") {
		errs = append(errs, errors.New("the MQTT gateway's TLS needs both a certificate and its key"))
	}
	if slices.ContainsFunc(c.Module.MQTTDevices(), func(d spec.Device) bool { return len(c.Module.DeviceSubjects(d)) == 0 }) {
		errs = append(errs, errors.New("an MQTT device may publish nowhere: the module spec has no ingress of MQTT topics (ingresses with topic:), or its devices list none"))
	}
	return errs
}
