// Command twinflow runs the Twinflow runtime and talks to it: run a worker,
// send messages and requests through the direct ingress, tail egresses,
// read state by address, and take checkpoints and savepoints.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `twinflow: stateful functions for digital twins

Usage:
  twinflow run [[-config] module.yaml] [-data DIR] [-nats URL] [flags]  start a worker
  twinflow wait [--timeout D] [--live]                                  wait until the runtime is ready (or live)
  twinflow send TYPE ID (--json DOC | --data TEXT) [--typename T]       publish to the direct ingress
  twinflow request TYPE ID (--json DOC | --data TEXT) [--typename T]    publish and wait for the reply
  twinflow tail SUBJECT                                                 print records published on an egress subject
  twinflow state get TYPE ID [NAME]                                     print an address's state
  twinflow state list TYPE [--prefix P] [--limit N] [--after ID]        list the addresses of a function type
  twinflow dlq list [--before SEQ] | replay SEQ...                      list dead letters, replay them to their ingress
  twinflow console                                                      print the web console's address and a login link
  twinflow functions                                                    list function types and their state specs
  twinflow checkpoint now | list | status                               take a checkpoint, list them, or show the latest
  twinflow stop [--savepoint NAME]                                      stop cleanly after a final checkpoint
  twinflow cluster status -cluster NAME [-v]                            workers, key groups and checkpoints of a cluster
  twinflow cluster drain -cluster NAME [-undo] WORKER                   hand a worker's key groups to the others
  twinflow keys [--data DIR]                                            print the key function endpoints verify calls with
  twinflow keys rotate signing | admin-token | nats ID | mqtt DEVICE    replace a key (see docs/security.md)
  twinflow keys nats-config [-config module.yaml]                       print a nats-server authorization block
  twinflow version                                                      print the version

Client commands find the runtime and its credentials in the runtime file of
--data-dir DIR (default $TWINFLOW_DATA; --data DIR too, but on send and
request --data is the payload), else of ./data, else of the runtime started
last by this user. --nats, --creds, --admin, --admin-token (and
$TWINFLOW_NATS, $TWINFLOW_CREDS, $TWINFLOW_ADMIN, $TWINFLOW_ADMIN_TOKEN)
override what they name. Run "twinflow COMMAND -h" for a command's flags.

Exit status: 0 on success, 1 when the command failed, 2 for a wrong
command line, 3 when state get finds no state to print.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := dispatch(ctx, os.Args[1:], os.Stdout)
	if code := exitCode(err); code != 0 {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "twinflow:", msg)
		}
		os.Exit(code)
	}
}

func dispatch(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return &exitError{code: exitUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, rest)
	case "send":
		return sendCmd(ctx, rest, out, false)
	case "request":
		return sendCmd(ctx, rest, out, true)
	case "tail":
		return tailCmd(ctx, rest, out)
	case "state":
		if len(rest) > 0 && isHelp(rest[0]) {
			fmt.Fprint(out, "usage:\n"+commandUsage("state"))
			return nil
		}
		if len(rest) > 0 && rest[0] == "list" {
			return stateListCmd(ctx, rest[1:], out)
		}
		if len(rest) == 0 || rest[0] != "get" {
			return usageError("state", "state: want a verb: get or list")
		}
		return stateCmd(ctx, rest[1:], out)
	case "dlq":
		return dlqCmd(ctx, rest, out)
	case "console":
		return consoleCmd(ctx, rest, out)
	case "functions":
		return functionsCmd(ctx, rest, out)
	case "checkpoint":
		return checkpointCmd(ctx, rest, out)
	case "stop":
		return stopCmd(ctx, rest, out)
	case "keys":
		return keysCmd(rest, out)
	case "cluster":
		return clusterCmd(ctx, rest, out)
	case "wait":
		return waitCmd(ctx, rest, out)
	case "version", "--version", "-version":
		fmt.Fprintln(out, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(out, usage)
		return nil
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("unknown command %q; twinflow help lists the commands", cmd)}
}

// splitType checks a function type argument.
func splitType(t string) error {
	if ns, name, ok := strings.Cut(t, "/"); !ok || ns == "" || name == "" {
		return fmt.Errorf("function type %q: want namespace/name", t)
	}
	return nil
}
