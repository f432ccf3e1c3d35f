package spec

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/router"
)

func TestLoadExample(t *testing.T) {
	m, err := Load("testdata/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Module{
		Endpoints: []Endpoint{
			{Functions: "datacenter/*", URL: "http://127.0.0.1:8000", Timeout: 10 * time.Second, MaxBatchAddresses: 256, MaxBatchMessages: 128, MaxInFlight: 8},
			{Functions: "datacenter/alerting", URL: "https://alerting.internal:8443/twinflow", Timeout: DefaultTimeout, MaxBatchAddresses: DefaultMaxBatchAddresses, MaxBatchMessages: DefaultMaxBatchMessages, MaxInFlight: DefaultMaxInFlight,
				TLS: &TLS{CA: abs(t, "testdata/certs/alerting-ca.pem"), Cert: abs(t, "testdata/certs/runtime.pem"), Key: abs(t, "testdata/certs/runtime-key.pem")}},
		},
		Ingresses: []router.IngressRule{
			{
				Name:     "metrics",
				Subject:  "datacenter.metrics.*.*",
				Typename: "datacenter/ServerMetricReport",
				Targets: []router.TargetRule{
					{FunctionType: "datacenter/server", ID: router.IDFromSubjectToken(3)},
					{FunctionType: "datacenter/rack", ID: router.IDFromHeader("X-Rack")},
				},
			},
			{
				Name:           "inventory",
				Subject:        "datacenter.inventory.>",
				TypenameHeader: "X-Type",
				Targets:        []router.TargetRule{{FunctionType: "datacenter/server", ID: router.IDFromJSONField("server.id")}},
			},
		},
		Egresses: []router.EgressRule{
			{Name: "alerts", Subject: "datacenter.alerts", Delivery: router.ExactlyOnce},
			{Name: "dashboard", Subject: "datacenter.dashboard", Delivery: router.AtLeastOnce},
		},
		Users: []User{
			{Name: "sensors", Ingresses: []string{"metrics"}, Publish: []string{"twinflow.in.datacenter.server.>"}},
			{Name: "dashboard", Egresses: []string{"dashboard"}, Subscribe: []string{"datacenter.alerts.>"}},
		},
	}
	want.DeadLetters = DeadLetters{MaxAge: 14 * 24 * time.Hour, MaxBytes: 256 << 20}
	want.Descriptors = []string{abs(t, "testdata/gen/datacenter.binpb"), "/opt/shared/units.binpb"}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", m, want)
	}
	if _, err := router.New(m.Ingresses, router.Limits{}); err != nil {
		t.Error(err)
	}
	if _, err := router.NewEgresses(m.Egresses); err != nil {
		t.Error(err)
	}
}

func abs(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeadLetterSizes(t *testing.T) {
	for src, want := range map[string]DeadLetters{
		"":                            {},
		"maxBytes: 1GiB":              {MaxBytes: 1 << 30},
		"maxBytes: 2.5MiB":            {MaxBytes: 5 << 19},
		"maxBytes: 4194304":           {MaxBytes: 4 << 20},
		"maxBytes: 1TiB":              {MaxBytes: 1 << 40},
		"maxAge: 720h":                {MaxAge: 720 * time.Hour},
		"maxAge: 1h, maxBytes: 10GiB": {MaxAge: time.Hour, MaxBytes: 10 << 30},
	} {
		m, err := Parse("m.yaml", []byte("deadLetters: {"+src+"}\n"))
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if m.DeadLetters != want {
			t.Errorf("%q: DeadLetters = %+v, want %+v", src, m.DeadLetters, want)
		}
	}
	d := DeadLetters{MaxBytes: 5 << 20}.WithDefaults()
	if d.MaxAge != DefaultDeadLetterMaxAge || d.MaxBytes != 5<<20 {
		t.Errorf("WithDefaults = %+v", d)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "module spec: open ") {
		t.Errorf("Load = %v", err)
	}
}

func TestEndpointFor(t *testing.T) {
	m, err := Parse("m.yaml", []byte(`
endpoints:
  - functions: a/x
    url: http://exact
  - functions: a/*
    url: http://wild
  - functions: b/*
    url: http://b
  - functions: c/y
    url: http://c
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ftype string
		url   string
	}{
		{"a/x", "http://exact"},
		{"a/y", "http://wild"},
		{"b/anything", "http://b"},
		{"c/y", "http://c"},
		{"c/z", ""},
		{"d/x", ""},
		{"ax", ""},
		{"", ""},
	} {
		ep, ok := m.EndpointFor(tt.ftype)
		if ok != (tt.url != "") || ep.URL != tt.url {
			t.Errorf("EndpointFor(%q) = %q, %v; want %q", tt.ftype, ep.URL, ok, tt.url)
		}
	}
	// An exact type wins wherever it is listed.
	m.Endpoints[0], m.Endpoints[1] = m.Endpoints[1], m.Endpoints[0]
	if ep, _ := m.EndpointFor("a/x"); ep.URL != "http://exact" {
		t.Errorf("EndpointFor(a/x) after reordering = %q", ep.URL)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "\n", "# only a comment\n", "---\n", "~\n", "endpoints:\ningresses: []\negresses: ~\n"} {
		m, err := Parse("m.yaml", []byte(src))
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if len(m.Endpoints)+len(m.Ingresses)+len(m.Egresses) != 0 {
			t.Errorf("Parse(%q) = %+v, want an empty module", src, m)
		}
	}
}

func TestParseAnchorsAndMerge(t *testing.T) {
	m, err := Parse("m.yaml", []byte(`
x-defaults: &defaults
  timeout: 5s
  maxInFlight: 2
endpoints: &eps
  - <<: *defaults
    functions: a/*
    url: http://a
  - <<: *defaults
    functions: b/*
    url: http://b
    maxInFlight: 3
`))
	if err == nil || err.Error() != "m.yaml:2: x-defaults: unknown field; the fields here are endpoints, ingresses, egresses, users, deadLetters, mqtt, descriptors" {
		t.Fatalf("Parse = %v, %v", m, err)
	}
	m, err = Parse("m.yaml", []byte(`
endpoints:
  - &a
    functions: a/*
    url: http://a
    timeout: 5s
    maxInFlight: 2
  - <<: *a
    functions: b/*
    maxInFlight: 3
`))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := m.EndpointFor("b/f"); b.URL != "http://a" || b.Timeout != 5*time.Second || b.MaxInFlight != 3 {
		t.Errorf("merged endpoint = %+v", b)
	}
}

// TestParseAliasExpansion checks that aliases which expand to more values
// than a spec can need are an error, not a long wait.
func TestParseAliasExpansion(t *testing.T) {
	const k = 1000
	src := "ingresses:\n  - &i {name: i, subject: s, targets: [&t {function: a/b, id: {header: X}}" +
		strings.Repeat(", *t", k) + "]}\n" + strings.Repeat("  - *i\n", k)
	_, err := Parse("m.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "the spec holds more than 100000 values once its aliases are expanded") {
		t.Fatalf("Parse = %v", err)
	}
}

// TestParseErrors checks the file, line and field of every kind of error.
func TestParseErrors(t *testing.T) {
	const ep = "endpoints:\n  - functions: a/*\n    url: http://a\n"
	tests := []struct {
		name string
		src  string
		want string // the errors, one a line
	}{
		{"syntax", "endpoints:\n  - functions: a/*\n    url: a: b\n",
			"m.yaml:3: invalid YAML: mapping values are not allowed in this context"},
		{"tab", "endpoints:\n\t- x\n",
			"m.yaml:2: invalid YAML: found character that cannot start any token"},
		{"two documents", "endpoints: []\n---\negresses: []\n",
			"m.yaml:2: a module spec is a single YAML document; remove the second one"},
		{"not a mapping", "- a\n",
			"m.yaml:1: must be a mapping with the fields endpoints, ingresses, egresses, users, deadLetters, mqtt, descriptors, not a list"},
		{"unknown top-level field", "endpoints: []\nendpoint: []\n",
			"m.yaml:2: endpoint: unknown field; the fields here are endpoints, ingresses, egresses, users, deadLetters, mqtt, descriptors"},
		{"duplicate field", "endpoints: []\nendpoints: []\n",
			"m.yaml:2: endpoints: duplicate field; it is already set on line 1"},
		{"not a list", "endpoints: {}\n",
			"m.yaml:1: endpoints: must be a list, not a mapping"},
		{"descriptors not a list", "descriptors: gen/a.binpb\n",
			`m.yaml:1: descriptors: must be a list, not the string "gen/a.binpb"`},
		{"descriptors bad items", "descriptors:\n  - gen/a.binpb\n  - {file: b.binpb}\n  - ''\n  - gen/a.binpb\n",
			"m.yaml:3: descriptors[1]: must be a string, not a mapping\n" +
				"m.yaml:4: descriptors[2]: must be the path of a descriptor set file (buf build -o FILE.binpb), not empty\n" +
				"m.yaml:5: descriptors[3]: gen/a.binpb is already listed as descriptors[0]"},
		{"dead letters unknown field", "deadLetters:\n  maxMsgs: 10\n",
			"m.yaml:2: deadLetters.maxMsgs: unknown field; the fields here are maxAge, maxBytes"},
		{"dead letters bad values", "deadLetters:\n  maxAge: -1h\n  maxBytes: 1 GiB of it\n",
			"m.yaml:2: deadLetters.maxAge: must be positive, got -1h\n" +
				"m.yaml:3: deadLetters.maxBytes: must be a size like 1GiB or 512MiB, got \"1 GiB of it\""},
		{"dead letters too small", "deadLetters:\n  maxBytes: 64KiB\n",
			"m.yaml:2: deadLetters.maxBytes: must be at least 2MiB, to hold a dead letter of the largest message, got 64KiB"},
		{"endpoint not a mapping", "endpoints:\n  - a/*\n",
			`m.yaml:2: endpoints[0]: must be a mapping with the fields functions, url, timeout, maxBatchAddresses, maxBatchMessages, maxInFlight, maxAttempts, maxAge, tls, not the string "a/*"`},
		{"unknown endpoint field", ep + "    maxInflight: 3\n",
			"m.yaml:4: endpoints[0].maxInflight: unknown field (did you mean maxInFlight?)"},
		{"unknown endpoint field, snake case", ep + "    max_in_flight: 3\n",
			"m.yaml:4: endpoints[0].max_in_flight: unknown field (did you mean maxInFlight?)"},
		{"missing functions and url", "endpoints:\n  - timeout: 1s\n",
			"m.yaml:2: endpoints[0]: functions is required\nm.yaml:2: endpoints[0]: url is required"},
		{"bad functions", "endpoints:\n  - functions: a.b/c\n    url: http://a\n",
			`m.yaml:2: endpoints[0].functions: function type "a.b/c": namespace "a.b" must match [A-Za-z0-9_-]+ (or "namespace/*" for a whole namespace)`},
		{"bad functions wildcard", "endpoints:\n  - functions: a b/*\n    url: http://a\n",
			`m.yaml:2: endpoints[0].functions: namespace "a b" must match [A-Za-z0-9_-]+`},
		{"functions a list", "endpoints:\n  - functions: [a/b]\n    url: http://a\n",
			`m.yaml:2: endpoints[0].functions: must be a string, not a list`},
		{"duplicate functions", ep + "  - functions: a/*\n    url: http://b\n",
			"m.yaml:4: endpoints[1].functions: a/* is already served by endpoints[0]"},
		{"bad url scheme", "endpoints:\n  - functions: a/*\n    url: ftp://a\n",
			`m.yaml:3: endpoints[0].url: URL "ftp://a" must start with http:// or https://`},
		{"url without host", "endpoints:\n  - functions: a/*\n    url: http:///x\n",
			`m.yaml:3: endpoints[0].url: URL "http:///x" has no host`},
		{"url unparsable", "endpoints:\n  - functions: a/*\n    url: \"http://a b\"\n",
			`m.yaml:3: endpoints[0].url: invalid URL: parse "http://a b": invalid character " " in host name`},
		{"bad duration", ep + "    timeout: 10\n",
			`m.yaml:4: endpoints[0].timeout: must be a duration like 10s or 1m30s, got "10"`},
		{"negative duration", ep + "    timeout: -1s\n",
			`m.yaml:4: endpoints[0].timeout: must be positive, got -1s`},
		{"zero int", ep + "    maxInFlight: 0\n",
			`m.yaml:4: endpoints[0].maxInFlight: must be 1 or more, got 0`},
		{"string int", ep + "    maxBatchMessages: many\n",
			`m.yaml:4: endpoints[0].maxBatchMessages: must be an integer, not the string "many"`},
		{"float int", ep + "    maxBatchAddresses: 1.5\n",
			`m.yaml:4: endpoints[0].maxBatchAddresses: must be an integer, not the number "1.5"`},
		{"huge int", ep + "    maxBatchAddresses: 99999999999999999999999\n",
			`m.yaml:4: endpoints[0].maxBatchAddresses: must be an integer, not the number "99999999999999999999999"`},

		{"ingress missing fields", ep + "ingresses:\n  - typename: a/B\n",
			"m.yaml:5: ingresses[0]: name is required\nm.yaml:5: ingresses[0]: targets is required\nm.yaml:5: ingresses[0]: subject is required (or topic, for MQTT)"},
		{"target missing fields", ep + "ingresses:\n  - name: i\n    subject: s\n    targets:\n      - {}\n",
			"m.yaml:8: ingresses[0].targets[0]: function is required\nm.yaml:8: ingresses[0].targets[0]: id is required"},
		{"id with none", ep + `ingresses:
  - name: i
    subject: s.*
    targets:
      - function: a/b
        id: { subjectToken: 1 }
      - function: a/c
        id: {}
`, "m.yaml:11: ingresses[0].targets[1].id: exactly one of subjectToken, header, jsonField is required"},
		{"id with two", ep + `ingresses:
  - name: i
    subject: s.*
    targets:
      - function: a/b
        id:
          subjectToken: 1
          header: X
`, "m.yaml:9: ingresses[0].targets[0].id: exactly one of subjectToken, header, jsonField is required"},
		{"id unknown field", ep + `ingresses:
  - name: i
    subject: s.*
    targets:
      - function: a/b
        id: { token: 1 }
`, "m.yaml:9: ingresses[0].targets[0].id.token: unknown field; the fields here are subjectToken, header, jsonField\n" +
			"m.yaml:9: ingresses[0].targets[0].id: exactly one of subjectToken, header, jsonField is required"},
		{"negative token", ep + `ingresses:
  - name: i
    subject: s.*
    targets:
      - function: a/b
        id: { subjectToken: -1 }
`, "m.yaml:9: ingresses[0].targets[0].id.subjectToken: must be 0 or more, got -1"},
		{"token past the pattern", ep + `ingresses:
  - name: i
    subject: s.*
    targets:
      - function: a/b
        id:
          subjectToken: 2
`, `m.yaml:10: ingresses[0].targets[0].id.subjectToken: token 2 is past the end of subject "s.*", which has 2 tokens (counted from 0)`},
		{"router errors are placed", ep + `ingresses:
  - name: bad.name
    subject: x.>
    typename: nons
    targets:
      - function: a/b
        id: { jsonField: a..b }
      - function: a/b
        id: { header: "X Y" }
  - name: j
    subject: x.y
    targets: []
`, `m.yaml:5: ingresses[0].name: ingress name "bad.name" must match [A-Za-z0-9_-]+
m.yaml:7: ingresses[0].typename: typename "nons" is not "namespace/name"
m.yaml:10: ingresses[0].targets[0].id.jsonField: JSON field path "a..b" has an empty part
m.yaml:12: ingresses[0].targets[1].id.header: header name "X Y" may hold only printable ASCII without spaces or ":"
m.yaml:14: ingresses[1].subject: "x.y" overlaps the subject "x.>" of ingress "bad.name"; a message may belong to one ingress only
m.yaml:15: ingresses[1].targets: at least one target is required`},
		{"reserved subject", ep + `ingresses:
  - name: i
    subject: twinflow.envelope
    targets: [{ function: a/b, id: { header: X } }]
`, `m.yaml:6: ingresses[0].subject: "twinflow.envelope" overlaps twinflow.envelope, which Twinflow uses`},
		{"duplicate ingress", ep + `ingresses:
  - name: i
    subject: s
    targets: [{ function: a/b, id: { header: X } }]
  - name: i
    subject: t
    targets: [{ function: a/b, id: { header: X } }]
`, `m.yaml:8: ingresses[1].name: duplicate ingress name "i"`},
		{"no endpoint for a target", ep + `ingresses:
  - name: i
    subject: s
    targets: [{ function: b/c, id: { header: X } }]
`, `m.yaml:7: ingresses[0].targets[0].function: no endpoint serves b/c; add one with functions: b/c or b/*`},
		{"an ingress that is not a mapping keeps later indexes", ep + `ingresses:
  - nope
  - name: i
    subject: s
    typename: bad
    targets: [{ function: a/b, id: { header: X } }]
`, `m.yaml:5: ingresses[0]: must be a mapping with the fields name, subject, topic, typename, typenameHeader, targets, not the string "nope"
m.yaml:8: ingresses[1].typename: typename "bad" is not "namespace/name"`},

		{"bad merge", "endpoints:\n  - <<: 5\n    functions: a/*\n    url: http://a\n",
			`m.yaml:2: endpoints[0].<<: must merge a mapping or a list of mappings, not the integer "5"`},
		{"duplicate field in a merged mapping", "endpoints:\n  - &a {functions: a/*, url: http://a, url: http://b}\n  - <<: *a\n    functions: b/*\n",
			"m.yaml:2: endpoints[0].url: duplicate field; it is already set on line 2\n" +
				"m.yaml:2: endpoints[1].url: duplicate field; it is already set on line 2"},

		{"egress errors", `egresses:
  - name: reply
    subject: a
  - name: b
    subject: "b.*"
  - name: c
    subject: c
    delivery: twice
  - subject: d
  - name: e
    subject: c.x
`, `m.yaml:2: egresses[0].name: egress name "reply" is reserved for the built-in egress that answers requests
m.yaml:5: egresses[1].subject: "b.*" has wildcards; an egress publishes to one subject
m.yaml:8: egresses[2].delivery: delivery "twice" is neither exactly-once nor at-least-once
m.yaml:9: egresses[3]: name is required
m.yaml:11: egresses[4].subject: "c.x" overlaps egress "c", which publishes on c and c.<key>`},
		{"egress overlapping an ingress", ep + `ingresses:
  - name: i
    subject: out.*
    targets: [{ function: a/b, id: { subjectToken: 1 } }]
egresses:
  - name: o
    subject: out
`, `m.yaml:10: egresses[0].subject: "out" (with its keyed subjects out.<key>) overlaps the subject "out.*" of ingress "i"`},
		{"tls errors", `endpoints:
  - functions: a/*
    url: http://a
    tls: { ca: ca.pem }
  - functions: b/*
    url: https://b
    tls: { cert: c.pem }
  - functions: c/*
    url: https://c
    tls: {}
  - functions: d/*
    url: https://d
    tls: { ca: x, bogus: y }
`, `m.yaml:4: endpoints[0].tls: the endpoint's url http://a is plain http; tls needs https://
m.yaml:7: endpoints[1].tls: set both cert and key (a client certificate and its key), or neither
m.yaml:10: endpoints[2].tls: set ca, or cert and key, or both
m.yaml:13: endpoints[3].tls.bogus: unknown field; the fields here are ca, cert, key`},
		{"user errors", ep + `ingresses:
  - name: metrics
    subject: m.*.*
    targets: [{ function: a/b, id: { subjectToken: 1 } }]
egresses:
  - name: alerts
    subject: alerts
users:
  - name: client
  - name: a b
  - name: u
    ingresses: [metrics, nope]
    egresses: [alerts, none]
    publish: [m.x.y, m.>, other.x, twinflow.in.a.b.>, twinflow.dlq.x]
    subscribe: [alerts, alerts.k, alerts.>, other, twinflow.dlq.>]
  - name: u
  - ingresses: metrics
`, `m.yaml:12: users[0].name: user name "client" is reserved for the identity every data dir has
m.yaml:13: users[1].name: user name "a b" must match [A-Za-z0-9_-]+
m.yaml:15: users[2].ingresses[1]: no ingress named "nope"; the ingresses are "direct" (the direct ingress), "metrics"
m.yaml:16: users[2].egresses[1]: no egress named "none"; the egresses are "alerts"
m.yaml:17: users[2].publish[1]: "m.>" is not within an ingress's subjects (twinflow.in.>, twinflow.envelope, twinflow.batch, twinflow.send.>, twinflow.call.>, m.*.*): a user may publish only to ingresses
m.yaml:17: users[2].publish[2]: "other.x" is not within an ingress's subjects (twinflow.in.>, twinflow.envelope, twinflow.batch, twinflow.send.>, twinflow.call.>, m.*.*): a user may publish only to ingresses
m.yaml:17: users[2].publish[4]: "twinflow.dlq.x" is not within an ingress's subjects (twinflow.in.>, twinflow.envelope, twinflow.batch, twinflow.send.>, twinflow.call.>, m.*.*): a user may publish only to ingresses
m.yaml:18: users[2].subscribe[3]: "other" is not within an egress's subjects (alerts, alerts.>): a user may subscribe only to egresses
m.yaml:18: users[2].subscribe[4]: "twinflow.dlq.>" is not within an egress's subjects (alerts, alerts.>): a user may subscribe only to egresses
m.yaml:19: users[3].name: duplicate user name "u" (users[2])
m.yaml:20: users[4].ingresses: must be a list, not the string "metrics"
m.yaml:20: users[4]: name is required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse("m.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", m)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse errors:\n%v\nwant:\n%s", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "m.yaml" {
				t.Errorf("error %T is not a *spec.Error", err)
			}
		})
	}
}
