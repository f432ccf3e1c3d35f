package runtime_test

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// TestNATSUsers pins what each identity may do. Every identity is denied
// publishing on every inbox prefix, even where an ingress's wildcards
// would reach it.
func TestNATSUsers(t *testing.T) {
	m := &spec.Module{
		Ingresses: []router.IngressRule{{Name: "metrics", Subject: "dc.metrics.*.*"}, {Name: "inv", Subject: "dc.inventory.>"}},
		Egresses:  []router.EgressRule{{Name: "alerts", Subject: "dc.alerts"}, {Name: "dash", Subject: "dc.dash"}},
		Users: []spec.User{
			{Name: "sensors", Ingresses: []string{"metrics"}, Publish: []string{"twinflow.in.dc.server.>"}},
			{Name: "board", Ingresses: []string{"direct"}, Egresses: []string{"dash"}, Subscribe: []string{"dc.alerts.>"}},
		},
	}
	keys, err := secrets.Ensure(t.TempDir(), m.UserNames())
	if err != nil {
		t.Fatal(err)
	}
	inboxes := []string{"_INBOX.>", "_INBOX_client.>", "_TWINFLOW_RUNTIME_INBOX.>", "_INBOX_runtime.>", "_INBOX_sensors.>", "_INBOX_board.>"}
	want := []natsbus.User{
		{Name: "runtime", NKey: keys.Runtime.Public, Unrestricted: true},
		{Name: "client", NKey: keys.Client.Public,
			Publish: natsbus.Rules{Allow: []string{"twinflow.in.>", "twinflow.envelope", "twinflow.batch", "twinflow.send.>", "twinflow.call.>", "dc.metrics.*.*", "dc.inventory.>",
				"$JS.API.STREAM.NAMES",
				"$JS.API.STREAM.INFO.TWINFLOW_EGRESS_alerts", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_alerts", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_alerts.>",
				"$JS.API.STREAM.INFO.TWINFLOW_EGRESS_dash", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_dash", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_dash.>",
				"$JS.API.STREAM.INFO.TWINFLOW_DLQ", "$JS.API.DIRECT.GET.TWINFLOW_DLQ", "$JS.API.DIRECT.GET.TWINFLOW_DLQ.>"},
				Deny: inboxes},
			Subscribe: natsbus.Rules{Allow: []string{"_INBOX_client.>", "twinflow.dlq.>", "dc.alerts", "dc.alerts.>", "dc.dash", "dc.dash.>"}}},
		{Name: "sensors", NKey: keys.Users["sensors"].Public,
			Publish:   natsbus.Rules{Allow: []string{"dc.metrics.*.*", "twinflow.in.dc.server.>"}, Deny: inboxes},
			Subscribe: natsbus.Rules{Allow: []string{"_INBOX_sensors.>"}}},
		{Name: "board", NKey: keys.Users["board"].Public,
			Publish: natsbus.Rules{Allow: []string{"twinflow.in.>", "twinflow.envelope", "twinflow.batch", "twinflow.send.>", "twinflow.call.>",
				"$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.TWINFLOW_EGRESS_dash", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_dash", "$JS.API.DIRECT.GET.TWINFLOW_EGRESS_dash.>"},
				Deny: inboxes},
			Subscribe: natsbus.Rules{Allow: []string{"_INBOX_board.>", "dc.dash", "dc.dash.>", "dc.alerts.>"}}},
	}
	got := runtime.NATSUsers(m, keys)
	if !reflect.DeepEqual(got, want) {
		for i := range max(len(got), len(want)) {
			if i >= len(got) || i >= len(want) || !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("user %d:\n got %+v\nwant %+v", i, at(got, i), at(want, i))
			}
		}
	}
}

func at(u []natsbus.User, i int) any {
	if i < len(u) {
		return u[i]
	}
	return nil
}

// TestSampleNATSConfig checks deploy/nats/authorization.conf against what
// the embedded server gives the data-center example's identities: a
// nats-server parses it, and every user has the same permissions (the
// sample's nkeys are a throwaway data dir's).
func TestSampleNATSConfig(t *testing.T) {
	m, err := spec.Load("../deploy/datacenter/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secrets.Ensure(t.TempDir(), m.UserNames())
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../deploy/nats/authorization.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, sample, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server cannot read the sample: %v", err)
	}
	want := runtime.NATSUsers(m, keys)
	if len(opts.Nkeys) != len(want) {
		t.Fatalf("the sample has %d users, want %d (%v)", len(opts.Nkeys), len(want), want)
	}
	for i, u := range want {
		got := opts.Nkeys[i].Permissions
		if u.Unrestricted {
			if got != nil {
				t.Errorf("user %s: the sample restricts it: %+v", u.Name, got)
			}
			continue
		}
		if got == nil || !reflect.DeepEqual(got.Publish.Allow, u.Publish.Allow) || !reflect.DeepEqual(got.Publish.Deny, u.Publish.Deny) ||
			!reflect.DeepEqual(got.Subscribe.Allow, u.Subscribe.Allow) || len(got.Subscribe.Deny) != 0 {
			t.Errorf("user %s: the sample has %+v %+v, want publish %+v, subscribe %+v; regenerate it with twinflow keys nats-config",
				u.Name, got.Publish, got.Subscribe, u.Publish, u.Subscribe)
		}
	}
}
