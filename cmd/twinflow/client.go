package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// sendCmd publishes a message to the direct ingress and waits for the
// JetStream acknowledgement; as a request it also waits for the reply.
func sendCmd(ctx context.Context, args []string, out io.Writer, request bool) error {
	name := "send"
	if request {
		name = "request"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("json", "", "payload: a JSON document (typename "+jsonTypename+" unless --typename says otherwise)")
	fs.String("data", "", "payload: raw text, sent as it is, with the typename --typename gives")
	var tf targetFlags
	tf.addNATS(fs)
	tf.addAdmin(fs)
	typename := fs.String("typename", jsonTypename, "typename of the message (required with --data)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the acknowledgement and reply")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError(name, "%s: want TYPE ID, got %d arguments", name, len(pos))
	}
	payload, err := sendPayload(fs, name)
	if err != nil {
		return err
	}
	subject, err := router.DirectSubject(pos[0], pos[1])
	if err != nil {
		return err
	}
	t, err := tf.resolve()
	if err != nil {
		return err
	}
	nc, js, err := t.connectNATS("twinflow-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// What the function took so far, to warn about a typename it never
	// took and to explain a refusal.
	types := functionTypes(ctx, t, tf)
	handled := handledTypenames(types, pos[0])
	if len(handled) > 0 && !slices.Contains(handled, *typename) {
		fmt.Fprintf(os.Stderr, "twinflow: warning: %s has handled only %s since the runtime started, not %s; "+
			"if it refuses the message, the message is dead-lettered (twinflow tail --all 'twinflow.dlq.>' shows why)\n",
			pos[0], strings.Join(handled, ", "), *typename)
	}
	hdr := nats.Header{}
	hdr.Set(router.TypenameHeader, *typename)
	if request {
		reply, err := natsbus.Request(ctx, js, subject, hdr, payload)
		if err != nil {
			if r := refusal(nc); r != nil {
				err = r
			} else if errors.Is(err, natsbus.ErrNoReply) && errors.Is(err, context.DeadlineExceeded) {
				return noReply(pos[0], pos[1], *timeout)
			}
			return fmt.Errorf("request to %s %s: %w", pos[0], pos[1], err)
		}
		if e := reply.Header.Get(router.ErrorHeader); e != "" {
			return fmt.Errorf("request to %s %s: the runtime answered with an error: %s%s", pos[0], pos[1], e, handledNote(pos[0], handled))
		}
		return newPrinter(t, tf, types).print(ctx, out, reply.Header.Get(router.TypenameHeader), reply.Data)
	}
	msg := &nats.Msg{Subject: subject, Header: hdr, Data: payload}
	future, err := js.PublishMsgAsync(msg)
	if err == nil {
		// A publish the server refuses is never acknowledged: say so at
		// once instead of waiting out the timeout.
		err = refusal(nc)
	}
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", subject, err)
	}
	select {
	case ack := <-future.Ok():
		fmt.Fprintf(out, "published to %s (stream %s, sequence %d)\n", subject, ack.Stream, ack.Sequence)
		return nil
	case err := <-future.Err():
		return fmt.Errorf("publishing to %s: %w", subject, err)
	case <-ctx.Done():
		return fmt.Errorf("publishing to %s: no acknowledgement within %s: %w", subject, *timeout, ctx.Err())
	}
}

// tailCmd prints the records published on a subject (an egress subject, or
// a dead-letter subject) as they arrive.
//
// A subject a stream captures is read from the stream, each stored record
// once, in order, by direct gets: the client identity may read egress and
// dead-letter streams that way, and create no consumer. Another subject is
// subscribed to.
func tailCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	var tf targetFlags
	tf.addNATS(fs)
	tf.addAdmin(fs)
	all := fs.Bool("all", false, "print the records already stored too, not only new ones")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("tail", "tail: want one SUBJECT, got %d arguments", len(pos))
	}
	t, err := tf.resolve()
	if err != nil {
		return err
	}
	nc, js, err := t.connectNATS("twinflow-tail")
	if err != nil {
		return err
	}
	defer nc.Close()
	records := newPrinter(t, tf, nil)
	print := func(subject string, h nats.Header, data []byte) {
		fmt.Fprintf(out, "%s %s ", subject, h.Get(router.SourceHeader))
		if e := h.Get(router.ErrorHeader); e != "" {
			fmt.Fprintf(out, "error=%q ", e)
		}
		_ = records.print(ctx, out, h.Get(router.TypenameHeader), data)
	}
	// New records wake the reader up; without a record for a second it
	// looks anyway.
	wake := make(chan struct{}, 1)
	sub, err := nc.Subscribe(pos[0], func(m *nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err == nil {
		err = refusal(nc)
	}
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", pos[0], err)
	}
	defer sub.Unsubscribe()
	name, err := js.StreamNameBySubject(ctx, pos[0])
	if err != nil {
		if *all {
			return fmt.Errorf("no stream stores %s, so there is nothing stored to print; without --all, tail prints new records: %w", pos[0], err)
		}
		// Not captured by a stream: print what the subscription gets.
		_ = sub.Unsubscribe()
		sub, err := nc.Subscribe(pos[0], func(m *nats.Msg) { print(m.Subject, m.Header, m.Data) })
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		<-ctx.Done()
		return nil
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	next := uint64(1)
	if !*all {
		next = stream.CachedInfo().State.LastSeq + 1
	}
	for {
		m, err := stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(pos[0]))
		switch {
		case err == nil:
			print(m.Subject, m.Header, m.Data)
			next = m.Sequence + 1
			continue
		case ctx.Err() != nil:
			return nil
		case !errors.Is(err, jetstream.ErrMsgNotFound) && !nc.IsConnected():
			return fmt.Errorf("reading stream %s: the connection to %s is lost (did the runtime stop?): %w", name, t.NATSURL, err)
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(time.Second):
		}
	}
}

// stateCmd prints an address's state as JSON.
func stateCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("state get", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 {
		return usageError("state get", "state get: want TYPE ID [NAME], got %d arguments", len(pos))
	}
	if err := splitType(pos[0]); err != nil {
		return err
	}
	req := &twinflowv1.GetStateRequest{Address: &twinflowv1.Address{Type: pos[0], Id: pos[1]}}
	if len(pos) == 3 {
		req.Names = []string{pos[2]}
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.GetState(ctx, connect.NewRequest(req))
	if err != nil {
		return t.adminError(err)
	}
	if len(resp.Msg.GetValues()) == 0 {
		return noState(ctx, c, req)
	}
	doc := stateDoc{Address: pos[0] + "/" + pos[1], Values: map[string]stateValue{}}
	for _, v := range resp.Msg.GetValues() {
		sv := stateValue{Typename: v.GetValue().GetTypename(), Value: stateJSON(v)}
		if ms := v.GetExpiresAtUnixMillis(); ms > 0 {
			sv.ExpiresAt = time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
		}
		doc.Values[v.GetName()] = sv
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

type stateDoc struct {
	Address string                `json:"address"`
	Values  map[string]stateValue `json:"values"`
}

type stateValue struct {
	Typename  string          `json:"typename"`
	Value     json.RawMessage `json:"value"`
	ExpiresAt string          `json:"expiresAt,omitempty"`
}

// stateJSON is a state value as the runtime renders it as JSON, else as a
// base64 string. A protobuf message the runtime has no descriptor of is
// said on stderr.
func stateJSON(v *twinflowv1.StateEntry) json.RawMessage {
	if v.GetJson() != "" {
		return json.RawMessage(v.GetJson())
	}
	if name, ok := strings.CutPrefix(v.GetValue().GetTypename(), protoPrefix); ok {
		fmt.Fprintf(os.Stderr, "twinflow: %s (%s) prints as base64: the runtime cannot render it: %s, or the value does not decode as one\n",
			v.GetName(), v.GetValue().GetTypename(), notDescribed(name))
	}
	return base64JSON(v.GetValue().GetValue())
}

func functionsCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("functions", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.ListFunctionTypes(ctx, connect.NewRequest(&twinflowv1.ListFunctionTypesRequest{}))
	if err != nil {
		return t.adminError(err)
	}
	for _, f := range resp.Msg.GetFunctionTypes() {
		fmt.Fprintf(out, "%s\t%s\n", f.GetType(), f.GetEndpointUrl())
		for _, s := range f.GetStateSpecs() {
			fmt.Fprintf(out, "  %s\t%s\t%s %dms\n", s.GetName(), s.GetTypename(), s.GetExpiryMode(), s.GetExpireAfterMillis())
		}
		if h := f.GetHandledTypenames(); len(h) > 0 {
			fmt.Fprintf(out, "  handled messages: %s\n", strings.Join(h, ", "))
		}
	}
	return nil
}

func checkpointCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("checkpoint", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("checkpoint", "checkpoint: want one verb: now, list or status")
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	switch pos[0] {
	case "now":
		resp, err := c.TriggerCheckpoint(ctx, connect.NewRequest(&twinflowv1.TriggerCheckpointRequest{}))
		if err != nil {
			return t.adminError(err)
		}
		printCheckpoints(out, resp.Msg.GetCheckpoint())
	case "list":
		resp, err := c.ListCheckpoints(ctx, connect.NewRequest(&twinflowv1.ListCheckpointsRequest{}))
		if err != nil {
			return t.adminError(err)
		}
		printCheckpoints(out, resp.Msg.GetCheckpoints()...)
	case "status":
		resp, err := c.GetCheckpointStatus(ctx, connect.NewRequest(&twinflowv1.GetCheckpointStatusRequest{}))
		if err != nil {
			return t.adminError(err)
		}
		if resp.Msg.GetLatest() != nil {
			printCheckpoints(out, resp.Msg.GetLatest())
		}
		if id := resp.Msg.GetInProgressId(); id != 0 {
			fmt.Fprintf(out, "in progress: %d\n", id)
		}
	default:
		return usageError("checkpoint", "checkpoint: unknown verb %q: want now, list or status", pos[0])
	}
	return nil
}

func printCheckpoints(out io.Writer, cps ...*twinflowv1.CheckpointInfo) {
	fmt.Fprintf(out, "%-8s %-24s %12s %12s %10s\n", "ID", "COMPLETED", "BYTES", "DURATION", "PAUSE")
	for _, cp := range cps {
		fmt.Fprintf(out, "%-8d %-24s %12d %10.1fms %8.2fms\n", cp.GetId(),
			time.UnixMilli(cp.GetCompletedAtUnixMillis()).UTC().Format("2006-01-02T15:04:05.000Z"),
			cp.GetBytes(), cp.GetDurationMillis(), cp.GetPauseMillis())
	}
}

func stopCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("stop", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	savepoint := fs.String("savepoint", "", "also write the final checkpoint as a savepoint: a new directory NAME under the runtime's savepoint dir (or an absolute path within it)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.Stop(ctx, connect.NewRequest(&twinflowv1.StopRequest{SavepointDir: *savepoint}))
	if err != nil {
		return t.adminError(err)
	}
	fmt.Fprintf(out, "stopped after checkpoint %d\n", resp.Msg.GetCheckpoint().GetId())
	if dir := resp.Msg.GetCheckpoint().GetSavepointDir(); dir != "" {
		fmt.Fprintf(out, "savepoint: %s\n", dir)
	}
	return nil
}
