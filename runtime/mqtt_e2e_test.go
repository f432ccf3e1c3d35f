package runtime_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinflow/twinflow/internal/testcert"
	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/spec"
)

// These tests publish with a real MQTT client (eclipse paho, MQTT 3.1.1)
// through the embedded NATS server's MQTT gateway, to an ingress of MQTT
// topics whose messages go to test/log: the address's "seen" list shows
// each message that reached it, and how many times.

// deviceIngress reads dc1/<rack>/<server>/metrics; the server is the id.
var deviceIngress = router.IngressRule{
	Name: "devices", Topic: "dc1/+/+/metrics", Subject: "dc1.*.*.metrics", Typename: readingType.Typename(),
	Targets: []router.TargetRule{{FunctionType: "test/log", ID: router.IDFromSubjectToken(2)}},
}

// startMQTT runs an engine with the MQTT gateway on a free port, and
// returns it with the gateway's URL.
func startMQTT(t *testing.T) (*harness, string) {
	t.Helper()
	ep := serve(t, ingressRegistry(t))
	cfg := baseConfig(t, ep.url())
	cfg.Module.Ingresses = []router.IngressRule{deviceIngress}
	// A fixed port, so that a restarted runtime is where devices reconnect.
	cfg.Module.MQTT = &spec.MQTT{Port: freeTCPPort(t)}
	h := start(t, cfg)
	url := h.e.Access().MQTTURL
	if !strings.HasPrefix(url, "mqtt://127.0.0.1:") {
		t.Fatalf("the runtime file's MQTT URL is %q", url)
	}
	return h, url
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// devicePassword reads the default device identity's password from the
// data dir, as a device's installer would.
func devicePassword(t *testing.T, h *harness) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.cfg.DataDir, "secrets", "mqtt", spec.DefaultDevice+".password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// device connects an MQTT client: with a persistent session unless clean,
// reconnecting by itself when the connection drops.
func device(t *testing.T, url, clientID, user, password string, clean bool) (mqtt.Client, error) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetUsername(user).SetPassword(password).
		SetCleanSession(clean).SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect: no CONNACK within 10s")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustDevice(t *testing.T, url, clientID, password string, clean bool) mqtt.Client {
	t.Helper()
	c, err := device(t, url, clientID, spec.DefaultDevice, password, clean)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publish publishes a reading and waits for the acknowledgement its QoS
// has (none for QoS 0: the write to the connection).
func publish(t *testing.T, c mqtt.Client, topic string, qos byte, value int64) {
	t.Helper()
	tok := c.Publish(topic, qos, false, readingJSON("", value))
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatalf("publish of %d to %s: not acknowledged within 30s", value, topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish of %d to %s: %v", value, topic, err)
	}
}

// seenBy returns the values test/log/<id> received, in order.
func seenBy(h *harness, id string) []int64 {
	b, ok := h.state("test/log", id)["seen"]
	if !ok {
		return nil
	}
	var list []int64
	if err := json.Unmarshal(b, &list); err != nil {
		h.t.Fatalf("seen of %s: %v", id, err)
	}
	return list
}

// waitSeen waits until the address received want, and checks that it
// received nothing else: the last value comes last, so everything before it
// has been applied.
func waitSeen(t *testing.T, h *harness, id string, want ...int64) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("the values %v at %s", want, id), func() bool {
		got := seenBy(h, id)
		return len(got) > 0 && got[len(got)-1] == want[len(want)-1]
	})
	if got := seenBy(h, id); !slices.Equal(got, want) {
		t.Fatalf("test/log/%s received %v, want %v: each message exactly once", id, got, want)
	}
}

// TestMQTTPublishReachesTheAddressOnce: a QoS 1 publish to
// dc1/rack-1/srv-1-3/metrics reaches test/log srv-1-3 once, as does a QoS 0
// one; a level with a dot is the id as the device wrote it.
func TestMQTTPublishReachesTheAddressOnce(t *testing.T) {
	h, url := startMQTT(t)
	c := mustDevice(t, url, "dev-qos", devicePassword(t, h), true)
	publish(t, c, "dc1/rack-1/srv-1-3/metrics", 1, 1)
	waitSeen(t, h, "srv-1-3", 1)
	publish(t, c, "dc1/rack-1/srv-1-3/metrics", 0, 2)
	publish(t, c, "dc1/rack-1/srv-1-3/metrics", 1, 3)
	waitSeen(t, h, "srv-1-3", 1, 2, 3)
	publish(t, c, "dc1/rack-1/srv.7/metrics", 1, 4)
	waitSeen(t, h, "srv.7", 4)
	// Every message went through the ingress's stream once.
	if got := seenBy(h, "srv-1-3"); len(got) != 3 {
		t.Fatalf("srv-1-3 received %v", got)
	}
}

// TestMQTTPersistentSession: a device with a persistent session finds it
// again after the runtime restarts, and what it published while the
// runtime was away arrives once it reconnects, once.
func TestMQTTPersistentSession(t *testing.T) {
	h, url := startMQTT(t)
	password := devicePassword(t, h)
	c := mustDevice(t, url, "dev-persistent", password, false)
	publish(t, c, "dc1/rack-2/srv-2-1/metrics", 1, 10)
	waitSeen(t, h, "srv-2-1", 10)

	h.restart()
	// The client reconnects by itself, to its session, and sends what it
	// was given meanwhile.
	tok := c.Publish("dc1/rack-2/srv-2-1/metrics", 1, false, readingJSON("", 11))
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish across the restart: %v", tok.Error())
	}
	waitSeen(t, h, "srv-2-1", 10, 11)

	// A new connection of the same client finds its session.
	c.Disconnect(100)
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("dev-persistent").SetUsername(spec.DefaultDevice).
		SetPassword(password).SetCleanSession(false)
	again := mqtt.NewClient(opts)
	ct := again.Connect()
	if !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("reconnect: %v", ct.Error())
	}
	defer again.Disconnect(0)
	if !ct.(*mqtt.ConnectToken).SessionPresent() {
		t.Error("the persistent session is gone after the restart")
	}
	publish(t, again, "dc1/rack-2/srv-2-1/metrics", 1, 12)
	waitSeen(t, h, "srv-2-1", 10, 11, 12)
}

// TestMQTTMalformedTopicIsDeadLettered: a topic whose level for the id is
// empty reaches the ingress and is dead-lettered with the reason; the
// messages after it keep flowing.
func TestMQTTMalformedTopicIsDeadLettered(t *testing.T) {
	h, url := startMQTT(t)
	dlq := h.subscribe(router.DeadLetterSubject)
	c := mustDevice(t, url, "dev-bad", devicePassword(t, h), true)
	publish(t, c, "dc1/rack-1//metrics", 1, 1)
	publish(t, c, "dc1/rack-1/srv-1-1/metrics", 1, 2)
	waitSeen(t, h, "srv-1-1", 2)
	testwait.For(t, "the dead letter", func() bool { return len(dlq.all()) == 1 })
	m := dlq.all()[0]
	if r := m.Header.Get(router.ErrorReasonHeader); r != string(router.ReasonMissingID) {
		t.Errorf("reason %q, want %s", r, router.ReasonMissingID)
	}
	if e := m.Header.Get(router.ErrorHeader); !strings.Contains(e, `level 2 of topic "dc1/rack-1//metrics" is empty`) {
		t.Errorf("error %q", e)
	}
}

// TestMQTTCredentials: the gateway refuses a device without credentials or
// with a wrong password; a device may not subscribe, and may not publish
// beyond its ingresses.
func TestMQTTCredentials(t *testing.T) {
	h, url := startMQTT(t)
	for _, cred := range []struct{ user, password string }{{"", ""}, {spec.DefaultDevice, "wrong"}, {"client", devicePassword(t, h)}} {
		// The server closes the connection without a CONNACK.
		if c, err := device(t, url, "dev-stranger", cred.user, cred.password, true); err == nil {
			c.Disconnect(0)
			t.Errorf("the gateway accepted user %q with password %q", cred.user, cred.password)
		}
	}
	c := mustDevice(t, url, "dev-limits", devicePassword(t, h), true)
	st := c.Subscribe("dc1/#", 1, nil)
	if !st.WaitTimeout(10 * time.Second) {
		t.Fatal("no SUBACK")
	}
	if code := st.(*mqtt.SubscribeToken).Result()["dc1/#"]; code != 0x80 {
		t.Errorf("SUBACK of a device's subscription: %#x, want 0x80 (refused)", code)
	}
	// Beyond its ingresses, a publish is dropped (MQTT still acknowledges
	// it); the next one, within them, arrives alone.
	dlq := h.subscribe(router.DeadLetterSubject)
	publish(t, c, "twinflow/in/test/log/x", 1, 1)
	publish(t, c, "dc1/rack-1/srv-1-9/metrics", 1, 2)
	waitSeen(t, h, "srv-1-9", 2)
	if got := seenBy(h, "x"); len(got) != 0 || len(dlq.all()) != 0 {
		t.Errorf("a publish beyond the device's rights got through: %v, %d dead letters", got, len(dlq.all()))
	}
}

// TestMQTTOverTLS: with a certificate the gateway speaks TLS only, and
// listens beyond loopback only with one.
func TestMQTTOverTLS(t *testing.T) {
	ep := serve(t, ingressRegistry(t))
	cfg := baseConfig(t, ep.url())
	cfg.Module.Ingresses = []router.IngressRule{deviceIngress}
	cfg.Module.MQTT = &spec.MQTT{Host: "0.0.0.0", Port: freeTCPPort(t)}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "the MQTT gateway would listen on 0.0.0.0, beyond this machine, without TLS") {
		t.Fatalf("a gateway beyond loopback without TLS: %v", err)
	}
	ca := testcert.NewCA(t)
	server := ca.Server(t, "127.0.0.1")
	cfg.Module.MQTT.TLS = &spec.ServerTLS{Cert: server.CertFile, Key: server.KeyFile}
	h := start(t, cfg)
	url := h.e.Access().MQTTURL
	if !strings.HasPrefix(url, "mqtts://127.0.0.1:") {
		t.Fatalf("the runtime file's MQTT URL is %q", url)
	}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("dev-tls").SetUsername(spec.DefaultDevice).
		SetPassword(devicePassword(t, h)).SetTLSConfig(&tls.Config{RootCAs: ca.Pool()})
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over TLS: %v", tok.Error())
	}
	defer c.Disconnect(0)
	publish(t, c, "dc1/rack-1/srv-1-1/metrics", 1, 7)
	waitSeen(t, h, "srv-1-1", 7)
	// In clear, the gateway does not answer MQTT.
	plain := "mqtt://" + strings.TrimPrefix(url, "mqtts://")
	if c, err := device(t, plain, "dev-plain", spec.DefaultDevice, devicePassword(t, h), true); err == nil {
		c.Disconnect(0)
		t.Fatal("the TLS gateway accepted a plain connection")
	}
}
