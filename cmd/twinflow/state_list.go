package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// stateListCmd prints the ids of the addresses of a function type that
// have state, a page at a time, from the runtime's address index.
func stateListCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("state list", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	prefix := fs.String("prefix", "", "only ids that start with this prefix")
	after := fs.String("after", "", "only ids after this one (the next page's cursor, printed at the end of a page)")
	limit := fs.Int("limit", 100, "ids per page, at most 1000")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: twinflow state list TYPE [--prefix P] [--limit N] [--after ID]")
	}
	if err := splitType(pos[0]); err != nil {
		return err
	}
	t, c, err := tf.adminAPI()
	if err != nil {
		return err
	}
	resp, err := c.ListAddresses(ctx, connect.NewRequest(&twinflowv1.ListAddressesRequest{
		Type: pos[0], Prefix: *prefix, After: *after, Limit: int32(*limit)}))
	if err != nil {
		return t.adminError(err)
	}
	for _, a := range resp.Msg.GetAddresses() {
		fmt.Fprintln(out, a.GetId())
	}
	// The summary is a comment line, easy to leave out of a pipe.
	fmt.Fprintf(out, "# %d shown; %d addresses of %s have state", len(resp.Msg.GetAddresses()), resp.Msg.GetTotal(), pos[0])
	if next := resp.Msg.GetNextAfter(); next != "" {
		fmt.Fprintf(out, "; next page: --after %q", next)
	}
	fmt.Fprintln(out)
	return nil
}
