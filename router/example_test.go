package router_test

import (
	"fmt"

	"github.com/twinflow/twinflow/router"
)

// A metrics report fans out to the server it is about, named by a subject
// token, and to its rack, named by a header.
func ExampleRouter_Route() {
	r, err := router.New([]router.IngressRule{{
		Name:     "metrics",
		Subject:  "datacenter.metrics.*.*",
		Typename: "datacenter/ServerMetricReport",
		Targets: []router.TargetRule{
			{FunctionType: "datacenter/server", ID: router.IDFromSubjectToken(3)},
			{FunctionType: "datacenter/rack", ID: router.IDFromHeader("X-Rack")},
		},
	}}, router.Limits{})
	if err != nil {
		panic(err)
	}
	msg := router.Message{
		Subject: "datacenter.metrics.eu1.srv-0042",
		Header:  map[string][]string{"X-Rack": {"rack-7"}},
		Data:    []byte(`{"cpu":0.93}`),
	}
	routed, err := r.Route("metrics", msg)
	fmt.Println(routed.Targets, routed.Typename, err)

	delete(msg.Header, "X-Rack")
	_, err = r.Route("metrics", msg)
	fmt.Println(err)
	subject, header := router.DeadLetter(err, msg)
	fmt.Println(subject, header[router.ErrorReasonHeader])
	// Output:
	// [datacenter/server/srv-0042 datacenter/rack/rack-7] datacenter/ServerMetricReport <nil>
	// ingress "metrics": header "X-Rack" missing; needed for the id of datacenter/rack
	// twinflow.dlq.ingress [missing_id]
}

// The direct ingress needs no configuration: the subject names the address.
func ExampleDirectSubject() {
	subject, err := router.DirectSubject("datacenter/server", "eu1.srv-0042")
	fmt.Println(subject, err)

	r, _ := router.New(nil, router.Limits{})
	routed, err := r.Route(router.DirectIngress, router.Message{
		Subject: subject,
		Header:  map[string][]string{router.TypenameHeader: {"twinflow/json"}},
		Data:    []byte(`{}`),
	})
	fmt.Println(routed.Targets, routed.Typename, err)
	// Output:
	// twinflow.in.datacenter.server.eu1.srv-0042 <nil>
	// [datacenter/server/eu1.srv-0042] twinflow/json <nil>
}

// An egress record with a key is published on the egress subject plus the key.
func ExampleEgresses_Resolve() {
	e, err := router.NewEgresses([]router.EgressRule{{Name: "alerts", Subject: "datacenter.alerts"}})
	if err != nil {
		panic(err)
	}
	subject, header, delivery, err := e.Resolve(router.EgressRecord{
		Egress:   "alerts",
		Typename: "datacenter/Alert",
		Key:      "srv-0042",
		Source:   router.Address{Type: "datacenter/server", ID: "srv-0042"},
	})
	fmt.Println(subject, header[router.SourceHeader], delivery, err)
	// Output:
	// datacenter.alerts.srv-0042 [datacenter/server/srv-0042] exactly-once <nil>
}
