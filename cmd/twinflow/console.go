package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"

	"github.com/twinflow/twinflow/runtime/secrets"
)

// consoleCmd prints the address of the runtime's web console, and a link
// that logs a browser in: the admin token travels in the link's fragment,
// which the browser keeps to itself and the login page takes.
func consoleCmd(_ context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("console", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New("usage: twinflow console")
	}
	t, err := tf.resolve()
	if err != nil {
		return err
	}
	token := tf.adminToken
	if token == "" && t.AdminTokenFile != "" {
		if token, err = secrets.ReadAdminToken(t.AdminTokenFile); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "console: %s/ui/\n", t.AdminURL)
	if token == "" {
		return fmt.Errorf("no admin token found (%s): log in with the runtime's token, in its data dir's secrets/admin.token", t.where())
	}
	fmt.Fprintf(out, "log in:  %s/ui/login#token=%s\n", t.AdminURL, url.QueryEscape(token))
	return nil
}
