package spec

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/twinflow/twinflow/router"
)

// TLS configures the HTTPS connection to an endpoint.
type TLS struct {
	// CA is a PEM file of the certificate authorities that verify the
	// endpoint's certificate; empty trusts the system's.
	CA string
	// Cert and Key are the PEM files of the client certificate and its key
	// that the runtime presents (mutual TLS); both or neither.
	Cert, Key string
}

// User is a NATS identity narrower than the client identity, for an
// embedded NATS server: it may publish only to the subjects of its
// ingresses and Publish, and subscribe only to those of its egresses and
// Subscribe (and to its own reply inbox).
type User struct {
	// Name identifies the user and names its credentials file:
	// [A-Za-z0-9_-]+, unique, neither "runtime" nor "client".
	Name string
	// Ingresses are the ingresses the user may publish to, by name;
	// "direct" is the direct ingress (twinflow.in.>, twinflow.envelope and
	// twinflow.batch) and the front door (twinflow.send.>, twinflow.call.>).
	Ingresses []string
	// Egresses are the egresses the user may read, by name: subscribe to
	// their subjects and read their streams.
	Egresses []string
	// Publish are more subjects (wildcards allowed) the user may publish
	// to, each within an ingress's subjects.
	Publish []string
	// Subscribe are more subjects (wildcards allowed) the user may
	// subscribe to, each within an egress's subjects.
	Subscribe []string
}

// UserNames lists the names of the users.
func (m *Module) UserNames() []string {
	names := make([]string, len(m.Users))
	for i, u := range m.Users {
		names[i] = u.Name
	}
	return names
}

// reservedUsers are the identities every data dir has.
var reservedUsers = []string{"runtime", "client"}

func (d *decoder) tls(r rawTLS, at, endpointURL string) *TLS {
	t := &TLS{CA: r.CA, Cert: r.Cert, Key: r.Key}
	switch {
	case (t.Cert == "") != (t.Key == ""):
		d.errorf(d.lineOf(at), at, "set both cert and key (a client certificate and its key), or neither")
	case *t == TLS{}:
		d.errorf(d.lineOf(at), at, "set ca, or cert and key, or both")
	}
	if u, err := url.Parse(endpointURL); err == nil && u.Scheme == "http" {
		d.errorf(d.lineOf(at), at, "the endpoint's url %s is plain http; tls needs https://", endpointURL)
	}
	return t
}

func (d *decoder) users(m *Module, raw []rawUser) {
	seen := map[string]int{}
	for i, r := range raw {
		at := fmt.Sprintf("users[%d]", i)
		if d.misfits[at] {
			continue
		}
		u := User{Name: deref(r.Name), Ingresses: r.Ingresses, Egresses: r.Egresses, Publish: r.Publish, Subscribe: r.Subscribe}
		if r.Name != nil {
			switch j, dup := seen[u.Name]; {
			case !router.IsValidName(u.Name):
				d.errorf(d.lineOf(at+".name"), at+".name", "user name %q must match [A-Za-z0-9_-]+", u.Name)
			case slices.Contains(reservedUsers, u.Name):
				d.errorf(d.lineOf(at+".name"), at+".name", "user name %q is reserved for the identity every data dir has", u.Name)
			case dup:
				d.errorf(d.lineOf(at+".name"), at+".name", "duplicate user name %q (users[%d])", u.Name, j)
			default:
				seen[u.Name] = i
			}
		}
		m.Users = append(m.Users, u)
	}
}

// checkUsers checks what the users name against the ingresses and
// egresses.
func (d *decoder) checkUsers(m *Module) {
	for i, u := range m.Users {
		at := fmt.Sprintf("users[%d]", i)
		for j, name := range u.Ingresses {
			if name != router.DirectIngress && !slices.ContainsFunc(m.Ingresses, func(in router.IngressRule) bool { return in.Name == name }) {
				p := fmt.Sprintf("%s.ingresses[%d]", at, j)
				d.errorf(d.lineOf(p), p, "no ingress named %q; the ingresses are %s", name, ingressNames(m))
			}
		}
		for j, name := range u.Egresses {
			if !slices.ContainsFunc(m.Egresses, func(e router.EgressRule) bool { return e.Name == name }) {
				p := fmt.Sprintf("%s.egresses[%d]", at, j)
				d.errorf(d.lineOf(p), p, "no egress named %q; the egresses are %s", name, egressNames(m))
			}
		}
		for j, s := range u.Publish {
			if !slices.ContainsFunc(IngressSubjects(m), func(p string) bool { return router.SubjectWithin(s, p) }) {
				p := fmt.Sprintf("%s.publish[%d]", at, j)
				d.errorf(d.lineOf(p), p, "%q is not within an ingress's subjects (%s): a user may publish only to ingresses",
					s, strings.Join(IngressSubjects(m), ", "))
			}
		}
		for j, s := range u.Subscribe {
			if !slices.ContainsFunc(EgressSubjects(m), func(p string) bool { return router.SubjectWithin(s, p) }) {
				p := fmt.Sprintf("%s.subscribe[%d]", at, j)
				d.errorf(d.lineOf(p), p, "%q is not within an egress's subjects (%s): a user may subscribe only to egresses",
					s, strings.Join(EgressSubjects(m), ", "))
			}
		}
	}
}

// IngressSubjects are the subjects publishers may send to: the direct
// ingress's, the runtime's front door's and each ingress's pattern.
func IngressSubjects(m *Module) []string {
	out := append(append([]string(nil), router.DirectStreamSubjects...), router.FrontDoorSubjects...)
	for _, in := range m.Ingresses {
		out = append(out, in.Subject)
	}
	return out
}

// EgressSubjects are the subjects egress records are published on: each
// egress's subject and its keyed subjects.
func EgressSubjects(m *Module) []string {
	var out []string
	for _, e := range m.Egresses {
		out = append(out, e.Subject, e.Subject+".>")
	}
	return out
}

func ingressNames(m *Module) string {
	names := []string{fmt.Sprintf("%q (the direct ingress)", router.DirectIngress)}
	for _, in := range m.Ingresses {
		names = append(names, fmt.Sprintf("%q", in.Name))
	}
	return strings.Join(names, ", ")
}

func egressNames(m *Module) string {
	if len(m.Egresses) == 0 {
		return "none"
	}
	var names []string
	for _, e := range m.Egresses {
		names = append(names, fmt.Sprintf("%q", e.Name))
	}
	return strings.Join(names, ", ")
}

// resolvePaths makes the relative file names of the module's TLS settings
// and descriptor sets relative to dir, the directory of the spec file.
func (m *Module) resolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for i := range m.Endpoints {
		if t := m.Endpoints[i].TLS; t != nil {
			t.CA, t.Cert, t.Key = abs(t.CA), abs(t.Cert), abs(t.Key)
		}
	}
	if m.MQTT != nil && m.MQTT.TLS != nil {
		t := m.MQTT.TLS
		t.Cert, t.Key, t.ClientCA = abs(t.Cert), abs(t.Key), abs(t.ClientCA)
	}
	for i, p := range m.Descriptors {
		m.Descriptors[i] = abs(p)
	}
}
