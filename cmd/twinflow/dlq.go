package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

const dlqUsage = "usage: twinflow dlq list [--before SEQ] [--limit N] | twinflow dlq replay SEQ..."

// dlqCmd lists the dead letters and replays them, through the admin API.
func dlqCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(dlqUsage)
	}
	switch args[0] {
	case "list":
		return dlqListCmd(ctx, args[1:], out)
	case "replay":
		return dlqReplayCmd(ctx, args[1:], out)
	}
	return fmt.Errorf("unknown dlq command %q; %s", args[0], dlqUsage)
}

func dlqListCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	before := fs.Uint64("before", 0, "only dead letters with a sequence below this one (the next page's cursor, printed at the end of a page)")
	limit := fs.Int("limit", 50, "dead letters per page, at most 500")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New(dlqUsage)
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.ListDeadLetters(ctx, connect.NewRequest(&twinflowv1.ListDeadLettersRequest{Before: *before, Limit: int32(*limit)}))
	if err != nil {
		return t.adminError(err)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tTIME\tSUBJECT\tREASON\tFOR\tTYPENAME\tREPLAY\tERROR")
	for _, d := range resp.Msg.GetDeadLetters() {
		replay := "to " + d.GetReplaySubject()
		switch {
		case d.GetReplayedAtUnixMillis() > 0:
			replay = "replayed " + time.UnixMilli(d.GetReplayedAtUnixMillis()).UTC().Format(time.RFC3339)
		case d.GetReplaySubject() == "":
			replay = "no"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetSequence(), time.UnixMilli(d.GetTimeUnixMillis()).UTC().Format(time.RFC3339),
			d.GetSubject(), or(d.GetReason(), "-"), or(d.GetTarget(), d.GetOriginalSubject(), d.GetSource(), "-"), or(d.GetTypename(), "-"),
			replay, oneLine(or(d.GetError(), "-")))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	noun := "dead letters"
	if resp.Msg.GetTotal() == 1 {
		noun = "dead letter"
	}
	fmt.Fprintf(out, "# %d %s, %d replayed", resp.Msg.GetTotal(), noun, resp.Msg.GetReplayed())
	if next := resp.Msg.GetNextBefore(); next != 0 {
		fmt.Fprintf(out, "; next page: --before %d", next)
	}
	fmt.Fprintln(out)
	return nil
}

func dlqReplayCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dlq replay", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return errors.New(dlqUsage)
	}
	var seqs []uint64
	for _, p := range pos {
		seq, err := strconv.ParseUint(p, 10, 64)
		if err != nil || seq == 0 {
			return fmt.Errorf("%q is not a dead letter's sequence (twinflow dlq list shows them)", p)
		}
		seqs = append(seqs, seq)
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.ReplayDeadLetters(ctx, connect.NewRequest(&twinflowv1.ReplayDeadLettersRequest{Sequences: seqs}))
	if err != nil {
		return t.adminError(err)
	}
	var failed []string
	for _, r := range resp.Msg.GetResults() {
		line := fmt.Sprintf("%d: %s", r.GetSequence(), strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(r.GetOutcome().String(), "REPLAY_OUTCOME_"), "_", " ")))
		if r.GetSubject() != "" {
			line += " to " + r.GetSubject()
		}
		if r.GetDetail() != "" {
			line += " (" + r.GetDetail() + ")"
		}
		fmt.Fprintln(out, line)
		switch r.GetOutcome() {
		case twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED, twinflowv1.ReplayOutcome_REPLAY_OUTCOME_ALREADY_REPLAYED:
		default:
			failed = append(failed, strconv.FormatUint(r.GetSequence(), 10))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d dead letters were not replayed: %s", len(failed), len(seqs), strings.Join(failed, " "))
	}
	return nil
}

// or returns the first non-empty string.
func or(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
