package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/twinflow/twinflow/runtime/runinfo"
)

// waitCmd waits until the runtime found as client commands find it answers
// its readiness probe (/readyz; /livez with --live), so that a script can
// start twinflow run in the background and go on once it serves. A runtime
// that is not there yet (no runtime file, or one written by a process that
// has gone) is waited for too: the runtime file is looked up again on every
// try.
func waitCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	var tf targetFlags
	tf.addAdmin(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait")
	live := fs.Bool("live", false, "wait until the runtime is live (/livez: its loops turn) rather than ready (/readyz: it can do its job)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("wait", "wait: unexpected arguments %q", pos)
	}
	if *timeout <= 0 {
		return usageError("wait", "wait: --timeout must be positive")
	}
	state, probe := "ready", "/readyz"
	if *live {
		state, probe = "live", "/livez"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var last string
	for {
		t, url, why := waitTarget(&tf)
		if t != nil {
			ok, answer := probeOnce(ctx, t, url+probe)
			if ok {
				fmt.Fprintf(out, "twinflow is %s at %s\n", state, url)
				return nil
			}
			why = answer
		}
		last = why
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("no runtime became %s within %s: %s", state, *timeout, last)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitTarget finds the runtime to wait for, or says why there is none yet.
func waitTarget(tf *targetFlags) (*target, string, string) {
	t, err := tf.resolve()
	switch {
	case err != nil:
		return nil, "", err.Error()
	case t.from == "" && tf.admin == "":
		return nil, "", "no runtime file found (twinflow run writes DATA/" + runinfo.FileName + " once it serves)"
	case t.PID > 0 && !t.Alive():
		return nil, "", "the runtime " + t.where()
	}
	return t, strings.TrimSuffix(t.AdminURL, "/"), ""
}

// probeOnce asks a probe once: whether it answered 200, and else what it
// answered.
func probeOnce(ctx context.Context, t *target, url string) (bool, string) {
	tr, err := runinfo.AdminTransport(t.AdminCA)
	if err != nil {
		return false, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false, fmt.Sprintf("%s does not answer (%s): %v", url, t.where(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return true, ""
	}
	return false, fmt.Sprintf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
}
