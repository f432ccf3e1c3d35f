package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit statuses. Scripts rely on them; the README lists them.
const (
	exitFailure = 1 // the command failed
	exitUsage   = 2 // the command line is wrong
	exitNoState = 3 // state get: there is no such state to print
)

// exitError is an error with an exit status other than exitFailure. An
// empty message prints nothing (the command said what it had to).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a wrong command line: exit status 2, with a pointer to
// the command's help.
func usageError(command, format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format+" (twinflow %s -h shows its usage)", append(args, command)...)}
}

// exitCode is the exit status of a command's error.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return exitFailure
}

// helpOutput receives the help a command prints for -h.
var helpOutput io.Writer = os.Stdout

// parse parses flags that may come before, between or after the
// positional arguments, and returns the positional ones. -h prints the
// command's usage lines (from the main usage text) and its flags, and
// returns flag.ErrHelp, which exits 0. A bad flag is returned once, as a
// usage error, for main to print.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			printHelp(helpOutput, fs)
			return nil, err
		} else if err != nil {
			return nil, usageError(fs.Name(), "%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// printHelp prints a command's lines of the main usage text, then its
// flags.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage:")
	fmt.Fprint(w, commandUsage(fs.Name()))
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// commandUsage returns the lines of the main usage text about a command
// ("state get" names a command with a verb).
func commandUsage(command string) string {
	var b strings.Builder
	for _, line := range strings.Split(usage, "\n") {
		rest, ok := strings.CutPrefix(line, "  twinflow "+command)
		if ok && (rest == "" || rest[0] == ' ') {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// isHelp reports whether an argument asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
