package runtime

import (
	"slices"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// RuntimeInboxPrefix is the prefix of the runtime's own reply inboxes (the
// answers of the JetStream API). It does not start with "_INBOX", so no
// request can name it as its reply subject and make the runtime answer
// itself.
const RuntimeInboxPrefix = "_TWINFLOW_RUNTIME_INBOX"

// ClientInboxPrefix is the client identity's reply inbox prefix.
const ClientInboxPrefix = router.InboxPrefix + "_" + secrets.Client

// InboxPrefix is the reply inbox prefix of an identity: _INBOX_<name>.
func InboxPrefix(identity string) string { return router.InboxPrefix + "_" + identity }

// FrontDoorInboxPrefix is the prefix of the inboxes the HTTP/Connect front
// door waits for replies on. Only the runtime reads it ("runtime" is no
// module user's name), and each front door adds a random part of its own.
var FrontDoorInboxPrefix = InboxPrefix(secrets.Runtime)

// NATSUsers are the identities of an embedded NATS server, for a module
// and the keys of a data dir, each with the least it needs:
//
//   - runtime: everything.
//   - client (publishers and the command line): publish to every ingress
//     subject (the direct ingress's, the front door's and the configured
//     ones); subscribe to
//     the egress subjects, the dead-letter subjects and its own inbox
//     prefix _INBOX_client; read the egress and dead-letter streams by
//     direct get (a read that creates nothing), their info and the list of
//     stream names. Nothing else: no other JetStream API (no stream or
//     consumer is created, changed or deleted), no publishing to egress,
//     dead-letter, inbox or internal subjects.
//   - each module spec user: the same kinds of rights, limited to the
//     ingresses, egresses and subjects it names, with its own inbox prefix.
//
// Every inbox prefix is denied to everyone's publishing, even where an
// ingress's wildcards would cover it: only the runtime answers requests.
func NATSUsers(m *spec.Module, keys *secrets.Set) []natsbus.User {
	inboxes := inboxSubjects(m)
	allEgresses := make([]string, len(m.Egresses))
	for i, e := range m.Egresses {
		allEgresses[i] = e.Name
	}
	client := natsbus.User{
		Name: secrets.Client, NKey: keys.Client.Public,
		Publish: natsbus.Rules{
			Allow: append(spec.IngressSubjects(m), streamReads(append(egressStreams(m, allEgresses), DeadLetterStream))...),
			Deny:  inboxes,
		},
		Subscribe: natsbus.Rules{
			Allow: append([]string{ClientInboxPrefix + ".>", router.DeadLetterSubjects}, spec.EgressSubjects(m)...),
		},
	}
	users := []natsbus.User{{Name: secrets.Runtime, NKey: keys.Runtime.Public, Unrestricted: true}, client}
	for _, u := range m.Users {
		var pub []string
		for _, name := range u.Ingresses {
			if name == router.DirectIngress {
				pub = append(pub, router.DirectStreamSubjects...)
				pub = append(pub, router.FrontDoorSubjects...)
			}
			for _, in := range m.Ingresses {
				if in.Name == name {
					pub = append(pub, in.Subject)
				}
			}
		}
		pub = append(pub, u.Publish...)
		sub := []string{InboxPrefix(u.Name) + ".>"}
		for _, name := range u.Egresses {
			for _, e := range m.Egresses {
				if e.Name == name {
					sub = append(sub, e.Subject, e.Subject+".>")
				}
			}
		}
		sub = append(sub, u.Subscribe...)
		pub = append(pub, streamReads(egressStreams(m, u.Egresses))...)
		users = append(users, natsbus.User{
			Name: u.Name, NKey: keys.Users[u.Name].Public,
			Publish:   natsbus.Rules{Allow: slices.Compact(pub), Deny: inboxes},
			Subscribe: natsbus.Rules{Allow: sub},
		})
	}
	return users
}

// inboxSubjects are the subjects of every identity's reply inboxes, which
// only the runtime may publish on.
func inboxSubjects(m *spec.Module) []string {
	inboxes := []string{router.InboxPrefix + ".>", ClientInboxPrefix + ".>", RuntimeInboxPrefix + ".>", FrontDoorInboxPrefix + ".>"}
	for _, u := range m.Users {
		inboxes = append(inboxes, InboxPrefix(u.Name)+".>")
	}
	return inboxes
}

// egressStreams are the streams of the named egresses.
func egressStreams(m *spec.Module, names []string) []string {
	var out []string
	for _, e := range m.Egresses {
		if slices.Contains(names, e.Name) {
			out = append(out, egressStreamPfx+e.Name)
		}
	}
	return out
}

// streamReads are the JetStream API subjects that read streams without
// changing anything: the stream names (to find a subject's stream), and
// each stream's info and direct gets.
func streamReads(streams []string) []string {
	if len(streams) == 0 {
		return nil
	}
	out := []string{"$JS.API.STREAM.NAMES"}
	for _, s := range streams {
		out = append(out, "$JS.API.STREAM.INFO."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>")
	}
	return out
}
