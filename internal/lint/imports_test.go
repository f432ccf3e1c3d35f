// Package lint holds checks of the code base itself.
package lint

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/twinflow/twinflow"

// forbidden lists, for each package tree, trees it must never depend on,
// directly or not. The runtime and the SDK meet only on the wire (proto/).
// A tree starting with "/" is the project's; others are import paths.
var forbidden = []struct {
	from string
	not  []string
}{
	{"/runtime", []string{"/sdk", "/examples"}},
	{"/router", []string{"/runtime", "/sdk", "/cmd", "/examples"}},
	{"/sdk", []string{"/runtime", "/router", "/cmd", "/examples"}},
	{"/proto", []string{"/runtime", "/router", "/sdk", "/cmd", "/examples"}},
	{"/examples", []string{"/runtime", "/cmd"}},
	// The conformance suite judges every SDK through the wire alone.
	{"/conformance/suite", []string{"/sdk", "/runtime", "/router", "/examples"}},
	// The platform's binary serves every application: it knows their
	// messages from the module spec's descriptors, never from their code.
	{"/cmd", []string{"/examples"}},
	// The shard core reaches the world through its Env and Store: no NATS,
	// no calls, no checkpoint driver.
	{"/runtime/shard", []string{"/runtime/invoke", "/runtime/natsbus", "/runtime/checkpoint", "/runtime/ingress",
		"connectrpc.com/connect", "github.com/nats-io"}},
	{"/runtime/invoke", []string{"/runtime/shard"}},
	// A program that sends messages links a NATS client, not a NATS
	// server or a store.
	{"/client", []string{"/sdk", "/examples", "/cmd", "github.com/nats-io/nats-server", "github.com/cockroachdb/pebble"}},
}

func TestForbiddenImports(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Deps", module+"/...")
	// Warnings go to stderr (npm's workspace links under node_modules
	// make go list warn about symlinks); only stdout is JSON.
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(&out)
	checked := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for _, rule := range forbidden {
			if !within(p.ImportPath, module+rule.from) {
				continue
			}
			checked++
			for _, dep := range p.Deps {
				for _, not := range rule.not {
					tree := not
					if strings.HasPrefix(not, "/") {
						tree = module + not
					}
					if within(dep, tree) {
						t.Errorf("%s depends on %s: %s must not depend on %s", p.ImportPath, dep, rule.from[1:], strings.TrimPrefix(not, "/"))
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package checked: the module path or layout changed")
	}
}

// TestBinariesLinkNoTesting keeps test support out of the commands: a
// helper that takes a testing.TB belongs in a ...test package, as
// net/http/httptest is to net/http.
func TestBinariesLinkNoTesting(t *testing.T) {
	out := goCmd(t, ".", nil, "list", "-f", "{{if eq .Name \"main\"}}{{.ImportPath}}{{end}}", module+"/...")
	mains := strings.Fields(out)
	if len(mains) == 0 {
		t.Fatal("no command found")
	}
	for _, m := range mains {
		if deps := strings.Fields(goCmd(t, ".", nil, "list", "-deps", m)); slices.Contains(deps, "testing") {
			t.Errorf("%s links the testing package", m)
		}
	}
}

// The SDK is a module of its own so that a function author's module
// depends on it and on little else: not the runtime's module, and no NATS
// server, Pebble, Prometheus or code generator.
var sdkForbidden = []string{
	"github.com/nats-io/nats-server",
	"github.com/cockroachdb/pebble",
	"github.com/prometheus/",
	"github.com/bufbuild/",
}

// offline runs the go command from the module cache alone, outside the
// workspace, so that it sees a module as its users do. The cache is first
// filled with the SDK module's graph (downloadSDKGraph): on a fresh machine
// the workspace's builds fetch only what they build, not the go.mod files
// of every module the SDK's graph names.
var offline = []string{"GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local"}

func downloadSDKGraph(t *testing.T) {
	t.Helper()
	goCmd(t, "../../sdk", []string{"GOWORK=off"}, "mod", "download")
}

func TestSDKDependencies(t *testing.T) {
	downloadSDKGraph(t)
	graph := goCmd(t, "../../sdk", offline, "mod", "graph")
	seen := 0
	for _, m := range strings.Fields(graph) {
		path, _, _ := strings.Cut(m, "@")
		seen++
		if path == module || slices.ContainsFunc(sdkForbidden, func(f string) bool { return strings.HasPrefix(path, f) }) {
			t.Errorf("the SDK's module graph holds %s", m)
		}
	}
	if seen == 0 {
		t.Fatal("the SDK's module graph is empty")
	}
}

// TestSDKUserModule builds the module graph of a new module that imports
// only the SDK, as a function author's does: it holds the SDK's few
// modules and nothing else.
func TestSDKUserModule(t *testing.T) {
	downloadSDKGraph(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := "module example.com/fn\n\ngo 1.25.0\n\n" +
		"require github.com/twinflow/twinflow/sdk v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/twinflow/twinflow/sdk => " + filepath.Join(root, "sdk") + "\n\n" +
		"replace github.com/twinflow/twinflow/proto => " + filepath.Join(root, "proto") + "\n"
	main := "package main\n\nimport \"github.com/twinflow/twinflow/sdk\"\n\nfunc main() { _ = sdk.NewRegistry() }\n"
	sum, err := os.ReadFile(filepath.Join(root, "sdk", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"go.mod": gomod, "main.go": main, "go.sum": string(sum)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	allowed := []string{
		"example.com/fn",
		module + "/sdk",
		module + "/proto",
		"connectrpc.com/connect",
		"google.golang.org/protobuf",
		"github.com/google/go-cmp",   // required by connect and protobuf, for their tests
		"github.com/golang/protobuf", // required by protobuf, for its tests
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(goCmd(t, dir, offline, "list", "-m", "all")), "\n") {
		path, _, _ := strings.Cut(line, " ")
		listed = append(listed, path)
		if !slices.Contains(allowed, path) {
			t.Errorf("a module that imports only the SDK requires %s", line)
		}
	}
	if !slices.Contains(listed, module+"/sdk") || !slices.Contains(listed, module+"/proto") {
		t.Errorf("go list -m all = %q; want the SDK and the protocol modules in it", listed)
	}
}

// goCmd runs the go command in dir with env added to the environment, and
// returns its standard output.
func goCmd(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return stdout.String()
}

func within(pkg, tree string) bool {
	return pkg == tree || strings.HasPrefix(pkg, tree+"/")
}
