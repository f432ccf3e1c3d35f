package router

import "testing"

func BenchmarkRoute(b *testing.B) {
	r := newTestRouter(b)
	cases := []struct {
		name    string
		ingress string
		msg     Message
	}{
		{"token+header", "metrics", Message{Subject: "datacenter.metrics.eu1.srv-7", Header: h("X-Rack", "r-3"), Data: []byte("x")}},
		{"json", "events", Message{Subject: "events.a", Header: h("X-Type", "a/B"), Data: []byte(`{"server":{"id":"s1"},"rack":1}`)}},
		{"direct", DirectIngress, Message{Subject: "twinflow.in.datacenter.server.srv-7", Header: h(TypenameHeader, "a/B"), Data: []byte("x")}},
		{"envelope", DirectIngress, Message{Subject: EnvelopeSubject, Data: envelope("datacenter/server", "srv-7", "a/B", "x")}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Route(c.ingress, c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
