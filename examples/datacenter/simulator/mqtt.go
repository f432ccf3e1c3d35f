package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/examples/datacenter/sim"
)

// Device mode: each simulated server is an MQTT device, as a server's
// baseboard controller would be. It connects with its own client id (its
// server id) and a persistent session, and publishes its reports at QoS 1
// (or 0) to dc1/<rack>/<server>/metrics, which the ingress device-metrics
// of deploy/datacenter/module-mqtt.yaml routes to the server's twin. A QoS
// 1 report the gateway did not acknowledge is sent again by the client
// after it reconnects; the twin keeps one sample per report time, so a
// report that arrives twice counts once.

// mqttOptions configure device mode.
type mqttOptions struct {
	url          string // the gateway; "" is NATS mode
	user         string
	passwordFile string
	topic        string // with {rack} and {server}
	qos          int
}

// devices are the MQTT clients of the simulated servers, by server id.
type devices map[string]mqtt.Client

// connectDevices connects one MQTT client per server.
func connectDevices(ctx context.Context, log *slog.Logger, o mqttOptions, servers []sim.Server) (devices, error) {
	if o.qos < 0 || o.qos > 1 {
		return nil, fmt.Errorf("-mqtt-qos is %d; the devices publish at QoS 0 or 1", o.qos)
	}
	b, err := os.ReadFile(o.passwordFile)
	if err != nil {
		return nil, fmt.Errorf("-mqtt-password-file: %w (twinflow run makes DATA/secrets/mqtt/%s.password when its module spec turns the gateway on)", err, o.user)
	}
	password := strings.TrimSpace(string(b))
	ds := devices{}
	for _, s := range servers {
		opts := mqtt.NewClientOptions().AddBroker(o.url).SetClientID("sim-" + s.ID).
			SetUsername(o.user).SetPassword(password).SetCleanSession(false).
			SetAutoReconnect(true).SetMaxReconnectInterval(5 * time.Second).SetConnectTimeout(10 * time.Second).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				log.Warn("MQTT connection lost; reconnecting", "device", s.ID, "err", err)
			})
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			ds.close()
			return nil, ctx.Err()
		}
		if err := tok.Error(); err != nil {
			ds.close()
			return nil, fmt.Errorf("device %s connecting to %s as %s: %w (a refused connection: check -mqtt-user and -mqtt-password-file)", s.ID, o.url, o.user, err)
		}
		ds[s.ID] = c
	}
	log.Info("devices connected over MQTT", "url", o.url, "devices", len(ds), "qos", o.qos)
	return ds, nil
}

func (ds devices) close() {
	for _, c := range ds {
		c.Disconnect(250)
	}
}

// publishRound publishes each report from its server's device and waits
// for the acknowledgements, at most one interval. QoS 0 reports are done
// once written.
func (ds devices) publishRound(ctx context.Context, o mqttOptions, reports []*datacenterv1.ServerMetricReport, interval time.Duration) (int, error) {
	toks := make([]mqtt.Token, 0, len(reports))
	for _, r := range reports {
		b, err := proto.Marshal(r)
		if err != nil {
			return 0, err
		}
		c, ok := ds[r.GetServerId()]
		if !ok {
			return 0, fmt.Errorf("no device for server %s", r.GetServerId())
		}
		toks = append(toks, c.Publish(deviceTopic(o.topic, r.GetRackId(), r.GetServerId()), byte(o.qos), false, b))
	}
	timer := time.NewTimer(max(interval, time.Second))
	defer timer.Stop()
	acked := 0
	var first error
	for _, tok := range toks {
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				first = cmpErr(first, err)
				continue
			}
			acked++
		case <-timer.C:
			return acked, cmpErr(first, fmt.Errorf("%d of %d reports unacknowledged after %v (the clients send them again)", len(toks)-acked, len(toks), interval))
		case <-ctx.Done():
			return acked, cmpErr(first, ctx.Err())
		}
	}
	return acked, first
}

// deviceTopic fills a topic template.
func deviceTopic(template, rack, server string) string {
	return strings.NewReplacer("{rack}", rack, "{server}", server).Replace(template)
}

// defaultPasswordFile is where twinflow run keeps a device's password in
// the local runtime's data dir.
func defaultPasswordFile(local runtimeInfo, user string) string {
	if local.DataDir == "" {
		return ""
	}
	return filepath.Join(local.DataDir, "secrets", "mqtt", user+".password")
}

var errNoMQTT = errors.New("-mqtt: no MQTT gateway: give its URL (mqtt://host:1883), or run twinflow with its MQTT gateway on (twinflow run -mqtt-port 1883, or a module spec with an mqtt section)")
