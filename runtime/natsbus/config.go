package natsbus

import (
	"fmt"
	"strings"
)

// AuthorizationConfig renders users as the authorization block of a
// nats-server configuration file: the same identities and permissions an
// embedded server started with them enforces, for an external server.
func AuthorizationConfig(users []User) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		if u.Name != "" {
			fmt.Fprintf(&b, "    # %s\n", u.Name)
		}
		if u.Unrestricted {
			fmt.Fprintf(&b, "    {nkey: %s}\n", quoteConf(u.NKey))
			continue
		}
		fmt.Fprintf(&b, "    {\n      nkey: %s\n      permissions: {\n", quoteConf(u.NKey))
		fmt.Fprintf(&b, "        publish: %s\n", rulesConf(u.Publish))
		fmt.Fprintf(&b, "        subscribe: %s\n", rulesConf(u.Subscribe))
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// rulesConf renders one permission. An empty allow list allows nothing,
// as it does for an embedded server: rendered as denying everything.
func rulesConf(r Rules) string {
	allow, deny := r.Allow, r.Deny
	if len(allow) == 0 {
		allow, deny = nil, []string{">"}
	}
	var parts []string
	if len(allow) > 0 {
		parts = append(parts, "allow: "+listConf(allow))
	}
	if len(deny) > 0 {
		parts = append(parts, "deny: "+listConf(deny))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func listConf(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = quoteConf(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quoteConf quotes a string for the configuration file. Quoted strings are
// taken literally: "$JS.API.>" is a subject, not a variable. Subjects and
// nkeys hold no control characters, so only quotes and backslashes need
// escaping.
func quoteConf(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
