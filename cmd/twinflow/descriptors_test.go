package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/runtime/descriptors/descriptorstest"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/sdk"
)

// readingType is sensors.v1.Reading as its encoding: neither this test
// nor the twinflow binary has Go code of the message, so only the module
// spec's descriptor set tells what it holds.
type readingType struct{}

func (readingType) Typename() string                { return descriptorstest.Typename }
func (readingType) Encode(v []byte) ([]byte, error) { return bytes.Clone(v), nil }
func (readingType) Decode(b []byte) ([]byte, error) { return bytes.Clone(b), nil }

var lastReading = sdk.ValueSpec[[]byte]{Name: "last", Type: readingType{}}

// probe turns a JSON reading into a sensors.v1.Reading: it keeps it as
// state, writes it to the readings egress, and answers a request with it.
func probe(ctx sdk.Context, msg sdk.Message) error {
	in, err := sdk.As(msg, sdk.JSONType[struct {
		Sensor  string  `json:"sensor"`
		Celsius float64 `json:"celsius"`
	}]("twinflow/json"))
	if err != nil {
		return sdk.Terminal(err)
	}
	r := descriptorstest.Reading(in.Sensor, in.Celsius)
	if err := lastReading.Set(ctx, r); err != nil {
		return err
	}
	if err := sdk.Egress(ctx, "readings", readingType{}, r); err != nil {
		return err
	}
	if err := sdk.Reply(ctx, readingType{}, r); err != nil && !errors.Is(err, sdk.ErrNoReplyTo) {
		return err
	}
	return nil
}

// writeModule writes a module spec serving sensors/* at url with the
// readings egress and the descriptor set descriptors (relative to the
// spec), and the set itself as gen/reading.binpb.
func writeModule(t *testing.T, dir, url, descriptors string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "gen"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gen", "reading.binpb"), descriptorstest.Set(), 0o644); err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(dir, "module.yaml")
	src := "endpoints:\n  - functions: sensors/*\n    url: " + url + "\n" +
		"egresses:\n  - name: readings\n    subject: sensors.readings\n    delivery: at-least-once\n" +
		"descriptors:\n  - " + descriptors + "\n"
	if err := os.WriteFile(module, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return module
}

// TestMessagesFromTheModuleSpec: state get, request and tail print a
// protobuf message that only the module spec's descriptor set describes as
// JSON; tail pointed at the NATS server alone prints it as base64, saying
// why.
func TestMessagesFromTheModuleSpec(t *testing.T) {
	isolate(t)
	reg := sdk.NewRegistry()
	if err := reg.Register("sensors/probe", sdk.FunctionFunc(probe), lastReading); err != nil {
		t.Fatal(err)
	}
	endpoint := httptest.NewServer(sdk.Handler(reg))
	t.Cleanup(endpoint.Close)
	dir := t.TempDir()
	module := writeModule(t, dir, endpoint.URL, "gen/reading.binpb")
	data := filepath.Join(dir, "data")
	p := startRun(t, module, "-data", data)
	if r := twinflow(t, "wait", "--data-dir", data); r.code != 0 {
		t.Fatalf("wait: %v\nthe runtime's output:\n%s", r, p.output())
	}
	const want = `{"sensor":"s-1","celsius":21.5}`

	if r := twinflow(t, "send", "sensors/probe", "p1", "--json", `{"sensor":"s-1","celsius":21.5}`, "--data-dir", data); r.code != 0 {
		t.Fatalf("send: %v", r)
	}
	var doc stateDoc
	testwait.For(t, "the state of sensors/probe p1", func() bool {
		r := twinflow(t, "state", "get", "sensors/probe", "p1", "--data-dir", data)
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &doc) == nil
	})
	if v := doc.Values["last"]; v.Typename != descriptorstest.Typename || compact(v.Value) != want {
		t.Errorf("state get printed %+v; want the reading as JSON %s", doc, want)
	}

	r := twinflow(t, "request", "sensors/probe", "p2", "--json", `{"sensor":"s-2","celsius":-4}`, "--data-dir", data)
	if r.code != 0 || strings.ReplaceAll(r.stdout, " ", "") != descriptorstest.Typename+`{"sensor":"s-2","celsius":-4}`+"\n" {
		t.Errorf("request: %v\nwant the reply as JSON", r)
	}

	out, stderr := tail(t, "--all", "sensors.readings", "--data-dir", data)
	line := "sensors.readings sensors/probe/p1 " + descriptorstest.Typename + " "
	testwait.For(t, "tail to print the first reading", func() bool { return strings.Contains(out(), line) })
	if got, _, _ := strings.Cut(out()[strings.Index(out(), line)+len(line):], "\n"); strings.ReplaceAll(got, " ", "") != want {
		t.Errorf("tail printed %s; want %s\nstderr:\n%s", got, want, stderr())
	}

	// With only a NATS server named, the runtime is unknown: base64, and
	// why on stderr.
	info, err := runinfo.Read(data)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr = tail(t, "--all", "sensors.readings", "--data-dir", data, "--nats", info.NATSURL)
	testwait.For(t, "tail to print the first reading as base64", func() bool { return strings.Contains(out(), line) })
	if got, _, _ := strings.Cut(out()[strings.Index(out(), line)+len(line):], "\n"); got != `"`+base64.StdEncoding.EncodeToString(descriptorstest.Reading("s-1", 21.5))+`"` {
		t.Errorf("tail --nats printed %s; want the reading as base64\nstderr:\n%s", got, stderr())
	}
	testwait.For(t, "tail --nats to say why", func() bool {
		return strings.Contains(stderr(), "twinflow: "+descriptorstest.Typename+" prints as base64: the runtime's message descriptors cannot be asked for (--nats names a NATS server, and no --admin")
	})
}

// tail runs twinflow tail in the background until the test ends; out and
// stderr return what it printed so far.
func tail(t *testing.T, args ...string) (out, stderr func() string) {
	t.Helper()
	cmd := exec.Command(binary(t, "twinflow"), append([]string{"tail"}, args...)...)
	var o, e lockedBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return o.String, e.String
}

// TestRunRefusesABadDescriptorSet: twinflow run stops at a descriptor set
// that is not one, naming it, before it starts anything.
func TestRunRefusesABadDescriptorSet(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "reading.proto"), []byte("syntax = \"proto3\";\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ descriptors, want string }{
		{"reading.proto", "module spec descriptors: descriptor set " + filepath.Join(dir, "reading.proto") + ": not a FileDescriptorSet (what buf build -o FILE.binpb writes)"},
		{"gen/nope.binpb", "module spec descriptors: descriptor set " + filepath.Join(dir, "gen", "nope.binpb") + ": open " + filepath.Join(dir, "gen", "nope.binpb") + ": no such file or directory"},
	} {
		module := writeModule(t, dir, "http://127.0.0.1:1", c.descriptors)
		data := filepath.Join(dir, "data")
		// A run that starts all the same is stopped, not waited for.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, binary(t, "twinflow"), "run", module, "-data", data, "-nats-port", "-1", "-admin", "127.0.0.1:0")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("run with descriptors %s: exit status %d (%v)\n%s\nwant exit status 1 and %q", c.descriptors, code, err, stderr.String(), c.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run with descriptors %s made the data dir (%v)", c.descriptors, err)
		}
	}
}
