package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// jsonTypename is the typename of a --json payload unless --typename says
// otherwise.
const jsonTypename = "twinflow/json"

// sendPayload checks the payload flags of send and request, which the
// command can judge before it publishes anything: exactly one of --json and
// --data, valid JSON for --json, and a typename for --data, whose raw text
// has no type the command could guess.
func sendPayload(fs *flag.FlagSet, command string) ([]byte, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	jsonDoc, data := fs.Lookup("json").Value.String(), fs.Lookup("data").Value.String()
	switch {
	case set["json"] && set["data"]:
		return nil, usageError(command, "%s: give the payload once: --json DOC or --data TEXT, not both", command)
	case set["json"]:
		if !json.Valid([]byte(jsonDoc)) {
			return nil, usageError(command, "%s: --json %q is not a JSON document (a JSON string needs its quotes: --json '\"ada\"')", command, jsonDoc)
		}
		return []byte(jsonDoc), nil
	case set["data"]:
		if !set["typename"] {
			return nil, usageError(command, "%s: --data sends raw text, whose typename the command cannot guess: add --typename "+
				"(the typename the function expects; twinflow/bytes for raw bytes), or send JSON with --json", command)
		}
		return []byte(data), nil
	}
	return nil, usageError(command, "%s: no payload: give --json DOC or --data TEXT (--data '' --typename T sends an empty message)", command)
}

// functionTypes asks the runtime which function types it knows, with the
// typenames each handled since it started, and its message descriptors. It
// returns nil when it cannot tell: no --admin names the runtime, and the
// one found is not the one of the NATS server the message goes to, or it
// does not answer in time.
func functionTypes(ctx context.Context, t *target, tf targetFlags) *twinflowv1.ListFunctionTypesResponse {
	if (t.from == "" || tf.nats != "") && tf.admin == "" {
		return nil
	}
	c, err := t.adminClient()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := c.ListFunctionTypes(ctx, connect.NewRequest(&twinflowv1.ListFunctionTypesRequest{}))
	if err != nil {
		return nil
	}
	return resp.Msg
}

// handledTypenames are the typenames functionType handled since the
// runtime started, from its answer to ListFunctionTypes; none without one.
// Functions declare no message types; this is what the runtime saw them
// take.
func handledTypenames(resp *twinflowv1.ListFunctionTypesResponse, functionType string) []string {
	for _, f := range resp.GetFunctionTypes() {
		if f.GetType() == functionType {
			return f.GetHandledTypenames()
		}
	}
	return nil
}

// handledNote says which typenames a function type took, to explain a
// refusal.
func handledNote(functionType string, handled []string) string {
	if len(handled) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s has handled %s since the runtime started)", functionType, strings.Join(handled, ", "))
}

// noReply explains a request that timed out: the message was accepted, so
// the function never replied.
func noReply(functionType, id string, timeout time.Duration) error {
	return fmt.Errorf("request to %s %s: no reply within %s. The message was accepted, but the function did not answer it: "+
		"it may not reply to this message (ctx.Reply), be failing and retried, or its endpoint may be down. "+
		"See the dead letters (twinflow tail --all 'twinflow.dlq.>'), the address's state (twinflow state get %s %s), "+
		"the runtime's readiness (twinflow wait), or wait longer with --timeout",
		functionType, id, timeout, functionType, id)
}
