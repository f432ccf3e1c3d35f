package spec

import (
	"os"
	"strings"
	"testing"

	"github.com/twinflow/twinflow/router"
)

// FuzzParse parses random specs: Parse must not panic, every error must
// name the file, and an accepted module must be accepted by the router.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/module.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("endpoints:\n  - &a {functions: a/*, url: http://a}\n  - {<<: *a, functions: b/*}\n"))
	f.Add([]byte("ingresses:\n  - name: i\n    subject: s.*\n    targets: [{function: a/b, id: {subjectToken: 1}}]\n"))
	f.Add([]byte("egresses: [{name: e, subject: x, delivery: at-least-once}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("f.yaml", data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "f.yaml") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if _, err := router.New(m.Ingresses, router.Limits{}); err != nil {
			t.Fatalf("accepted spec rejected by router.New: %v", err)
		}
		if _, err := router.NewEgresses(m.Egresses); err != nil {
			t.Fatalf("accepted spec rejected by router.NewEgresses: %v", err)
		}
		for _, in := range m.Ingresses {
			for _, tr := range in.Targets {
				if _, ok := m.EndpointFor(tr.FunctionType); !ok {
					t.Fatalf("accepted spec has no endpoint for %s", tr.FunctionType)
				}
			}
		}
		for _, ep := range m.Endpoints {
			if ep.URL == "" || ep.Timeout <= 0 || ep.MaxBatchAddresses < 1 || ep.MaxBatchMessages < 1 || ep.MaxInFlight < 1 {
				t.Fatalf("accepted endpoint %+v", ep)
			}
		}
	})
}
