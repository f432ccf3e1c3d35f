package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/descriptors"
	"github.com/twinflow/twinflow/runtime/typedjson"
)

// protoPrefix starts the typenames of protobuf messages.
const protoPrefix = "proto/"

// printer prints the records of request and tail. JSON values print as
// they are; protobuf messages through the message types the runtime serves
// (its module spec's descriptors), asked for once, the first time a message
// the builtin types do not describe comes along; anything else, and a
// message that cannot be rendered, as a base64 string, with a hint on
// stderr that says why.
type printer struct {
	// descriptorSet returns the runtime's descriptor set; nil when the
	// runtime cannot be asked, with why in noRuntime.
	descriptorSet func(context.Context) ([]byte, error)
	noRuntime     string

	codec   *typedjson.Codec
	types   *descriptors.Registry
	fetched bool
	// fetchErr is why the runtime's descriptors could not be had.
	fetchErr error
	// hinted are the typenames a hint was given for: one each.
	hinted map[string]bool
	stderr io.Writer
}

// newPrinter returns a printer that asks the runtime of t for its
// descriptors, unless the command was pointed at another NATS server only:
// that one's runtime is unknown.
func newPrinter(t *target, tf targetFlags, resp *twinflowv1.ListFunctionTypesResponse) *printer {
	types := descriptors.Builtin()
	p := &printer{codec: typedjson.New(types.Types()), types: types, hinted: map[string]bool{}, stderr: os.Stderr}
	switch {
	case resp != nil:
		p.descriptorSet = func(context.Context) ([]byte, error) { return resp.GetDescriptorSet(), nil }
	case tf.nats != "" && tf.admin == "":
		p.noRuntime = "--nats names a NATS server, and no --admin the runtime whose admin API serves them"
	default:
		p.descriptorSet = func(ctx context.Context) ([]byte, error) { return fetchDescriptorSet(ctx, t) }
	}
	return p
}

// fetchDescriptorSet asks the runtime's admin API for its descriptor set.
func fetchDescriptorSet(ctx context.Context, t *target) ([]byte, error) {
	c, err := t.adminClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.ListFunctionTypes(ctx, connect.NewRequest(&twinflowv1.ListFunctionTypesRequest{}))
	if err != nil {
		return nil, fmt.Errorf("the runtime's admin API at %s: %w", t.AdminURL, err)
	}
	return resp.Msg.GetDescriptorSet(), nil
}

// render shows a value as JSON.
func (p *printer) render(ctx context.Context, typename string, b []byte) json.RawMessage {
	if s, ok := p.codec.Render(typename, b); ok {
		return json.RawMessage(s)
	}
	if strings.HasPrefix(typename, protoPrefix) && !p.fetched {
		p.fetch(ctx)
		if s, ok := p.codec.Render(typename, b); ok {
			return json.RawMessage(s)
		}
	}
	if strings.HasPrefix(typename, protoPrefix) && !p.hinted[typename] {
		p.hinted[typename] = true
		fmt.Fprintf(p.stderr, "twinflow: %s prints as base64: %s\n", typename, p.why(typename))
	}
	return base64JSON(b)
}

// fetch replaces the builtin types with the runtime's.
func (p *printer) fetch(ctx context.Context) {
	p.fetched = true
	if p.descriptorSet == nil {
		return
	}
	set, err := p.descriptorSet(ctx)
	if err != nil {
		p.fetchErr = err
		return
	}
	if len(set) == 0 {
		return // the module spec lists no descriptors: the builtins are all
	}
	types, err := descriptors.New(descriptors.Set{Name: "of the runtime", Data: set})
	if err != nil {
		p.fetchErr = err
		return
	}
	p.types, p.codec = types, typedjson.New(types.Types())
}

// why says why a protobuf message could not be rendered.
func (p *printer) why(typename string) string {
	name := strings.TrimPrefix(typename, protoPrefix)
	switch {
	case p.descriptorSet == nil:
		return "the runtime's message descriptors cannot be asked for (" + p.noRuntime + ")"
	case p.fetchErr != nil:
		return fmt.Sprintf("the runtime's message descriptors could not be read (%v); with the runtime running, they print as JSON", p.fetchErr)
	}
	if _, err := p.types.Files().FindDescriptorByName(protoreflect.FullName(name)); err == nil {
		return "it does not decode as " + name
	}
	return notDescribed(name)
}

// notDescribed says that the runtime has no descriptor of the message
// name, and what to do.
func notDescribed(name string) string {
	return fmt.Sprintf("the runtime's module spec describes no message %s: list a descriptor set that does "+
		"(buf build -o FILE.binpb) under descriptors in the module spec", name)
}

func base64JSON(b []byte) json.RawMessage {
	j, _ := json.Marshal(base64.StdEncoding.EncodeToString(b))
	return j
}

// print prints one record: its typename and its value.
func (p *printer) print(ctx context.Context, out io.Writer, typename string, data []byte) error {
	_, err := fmt.Fprintf(out, "%s %s\n", typename, p.render(ctx, typename, data))
	return err
}
