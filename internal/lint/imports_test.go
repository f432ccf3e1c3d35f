// Package lint holds checks of the code base itself.
package lint

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/twinflow/twinflow"

// forbidden lists, for each package tree, trees it must never depend on,
// directly or not. The runtime and the SDK meet only on the wire (proto/).
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
					if within(dep, module+not) {
						t.Errorf("%s depends on %s: %s must not depend on %s", p.ImportPath, dep, rule.from[1:], not[1:])
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package checked: the module path or layout changed")
	}
}

func within(pkg, tree string) bool {
	return pkg == tree || strings.HasPrefix(pkg, tree+"/")
}
