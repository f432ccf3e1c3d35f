package main

import (
	"os"
	"strings"
	"testing"

	"github.com/twinflow/twinflow/internal/testwait"
)

func TestStateList(t *testing.T) {
	c := startCLI(t)
	for _, id := range []string{"a", "b", "b1", "c"} {
		c.run("send", "cli/counter", id, "--json", `{"add": 1}`)
	}
	testwait.For(t, "the four counters", func() bool {
		return strings.Contains(c.run("state", "list", "cli/counter"), "# 4 shown; 4 addresses of cli/counter have state\n")
	})
	if out := c.run("state", "list", "cli/counter", "--limit", "2"); out != "a\nb\n# 2 shown; 4 addresses of cli/counter have state; next page: --after \"b\"\n" {
		t.Errorf("first page:\n%s", out)
	}
	if out := c.run("state", "list", "cli/counter", "--limit", "2", "--after", "b"); out != "b1\nc\n# 2 shown; 4 addresses of cli/counter have state\n" {
		t.Errorf("second page:\n%s", out)
	}
	if out := c.run("state", "list", "cli/counter", "--prefix", "b"); !strings.HasPrefix(out, "b\nb1\n# 2 shown") {
		t.Errorf("prefix b:\n%s", out)
	}
	if _, err := c.try(c.with([]string{"state", "list", "nonamespace"})...); err == nil || !strings.Contains(err.Error(), "namespace/name") {
		t.Errorf("state list of a bad type: %v", err)
	}
}

func TestDLQListAndReplay(t *testing.T) {
	c := startCLI(t)
	// Not the JSON the counter wants: it fails for good. Dead letters of
	// functions go out with the checkpoint that covers them.
	c.run("send", "cli/counter", "x", "--data", "not json", "--typename", "twinflow/bytes")
	testwait.For(t, "the dead letter", func() bool {
		c.run("checkpoint", "now")
		return strings.Contains(c.run("dlq", "list"), "# 1 dead letter, 0 replayed")
	})
	out := c.run("dlq", "list")
	if !strings.Contains(out, "twinflow.dlq.function") || !strings.Contains(out, "cli/counter/x") || !strings.Contains(out, "to twinflow.in.cli.counter.x") {
		t.Errorf("dlq list:\n%s", out)
	}
	if out := c.run("dlq", "replay", "1"); out != "1: replayed to twinflow.in.cli.counter.x\n" {
		t.Errorf("dlq replay 1: %q", out)
	}
	if out := c.run("dlq", "replay", "1"); !strings.HasPrefix(out, "1: already replayed to twinflow.in.cli.counter.x (replayed at ") {
		t.Errorf("dlq replay 1 again: %q", out)
	}
	out, err := c.try(c.with([]string{"dlq", "replay", "999"})...)
	if err == nil || !strings.Contains(out, "999: not found") || !strings.Contains(err.Error(), "1 of 1 dead letters were not replayed: 999") {
		t.Errorf("dlq replay 999: %q, %v", out, err)
	}
	if _, err := c.try(c.with([]string{"dlq", "replay", "x"})...); err == nil || !strings.Contains(err.Error(), "not a dead letter's sequence") {
		t.Errorf("dlq replay x: %v", err)
	}
	// The replay failed again, and is a dead letter of its own.
	testwait.For(t, "the replay's dead letter", func() bool {
		c.run("checkpoint", "now")
		return strings.Contains(c.run("dlq", "list"), "# 2 dead letters, 1 replayed")
	})
}

func TestConsoleLink(t *testing.T) {
	c := startCLI(t)
	token, err := os.ReadFile(c.e.Access().AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	out := c.run("console")
	want := "console: " + c.e.AdminURL() + "/ui/\nlog in:  " + c.e.AdminURL() + "/ui/login#token=" + strings.TrimSpace(string(token)) + "\n"
	if out != want {
		t.Errorf("twinflow console printed\n%s\nwant\n%s", out, want)
	}
}
