package main

import (
	"runtime"
	"strings"
	"testing"
)

// TestHelp: every command's -h exits 0 and prints its usage lines and its
// flags; a command line that is wrong exits 2.
func TestHelp(t *testing.T) {
	isolate(t)
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "-h"}, []string{"twinflow run [[-config] module.yaml]", "-nats-port"}},
		{[]string{"wait", "-h"}, []string{"twinflow wait [--timeout D]", "-timeout"}},
		{[]string{"send", "-h"}, []string{"twinflow send TYPE ID (--json DOC | --data TEXT)", "-typename"}},
		{[]string{"request", "--help"}, []string{"twinflow request TYPE ID", "-timeout"}},
		{[]string{"tail", "-h"}, []string{"twinflow tail SUBJECT", "-all"}},
		{[]string{"state", "-h"}, []string{"twinflow state get TYPE ID [NAME]"}},
		{[]string{"state", "get", "-h"}, []string{"twinflow state get TYPE ID [NAME]", "-admin-token"}},
		{[]string{"functions", "-h"}, []string{"twinflow functions", "-admin"}},
		{[]string{"checkpoint", "-h"}, []string{"twinflow checkpoint now | list | status", "-admin"}},
		{[]string{"stop", "-h"}, []string{"twinflow stop [--savepoint NAME]", "-savepoint"}},
		{[]string{"keys", "-h"}, []string{"twinflow keys rotate signing", "twinflow keys nats-config", "-config"}},
		{[]string{"help"}, []string{"Usage:", "Exit status:"}},
		{[]string{"-h"}, []string{"Usage:"}},
	} {
		r := twinflow(t, tt.args...)
		if r.code != 0 {
			t.Errorf("twinflow %s: %v", strings.Join(tt.args, " "), r)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("twinflow %s does not print %q:\n%v", strings.Join(tt.args, " "), w, r)
			}
		}
	}
	for _, args := range [][]string{{}, {"bogus"}, {"state"}, {"checkpoint"}, {"checkpoint", "later"}, {"tail"}, {"state", "get", "a/b"}} {
		if r := twinflow(t, args...); r.code != 2 {
			t.Errorf("twinflow %s: %v; want exit status 2", strings.Join(args, " "), r)
		}
	}
}

// TestFlagErrorOnce: a bad flag value is said once, with where to look.
func TestFlagErrorOnce(t *testing.T) {
	isolate(t)
	r := twinflow(t, "send", "a/b", "c", "--json", "1", "--timeout", "abc")
	if r.code != 2 || strings.Count(r.stderr, `invalid value "abc" for flag -timeout`) != 1 || !strings.Contains(r.stderr, "twinflow send -h") {
		t.Errorf("%v\nwant the error once and exit status 2", r)
	}
}

// TestVersion: version and --version print the version stamped at build
// time, and the Go that built it.
func TestVersion(t *testing.T) {
	isolate(t)
	for _, arg := range []string{"version", "--version"} {
		r := twinflow(t, arg)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "twinflow "+testVersion+" ") || !strings.Contains(r.stdout, runtime.Version()) {
			t.Errorf("twinflow %s: %v", arg, r)
		}
	}
}

// TestSendChecksItsPayload: what the command can judge alone fails before
// anything is published (no runtime runs here).
func TestSendChecksItsPayload(t *testing.T) {
	isolate(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "a/b", "c"}, "no payload: give --json DOC or --data TEXT"},
		{[]string{"request", "a/b", "c"}, "no payload"},
		{[]string{"send", "a/b", "c", "--json", "1", "--data", "x", "--typename", "t/x"}, "not both"},
		{[]string{"send", "a/b", "c", "--data", "x"}, "--data sends raw text, whose typename the command cannot guess: add --typename"},
		{[]string{"send", "a/b", "c", "--json", "ada"}, `--json "ada" is not a JSON document (a JSON string needs its quotes`},
		{[]string{"send", "a/b"}, "want TYPE ID"},
	} {
		r := twinflow(t, tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("twinflow %s: %v\nwant exit status 2 and %q", strings.Join(tt.args, " "), r, tt.want)
		}
	}
}
