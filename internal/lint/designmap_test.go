package lint

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// mapped are the package trees whose packages docs/design.md's package map
// must name.
var mapped = []string{"client", "runtime", "router", "sdk", "cmd", "conformance", "deploy", "internal", "proto/gen/twinflow"}

// TestDesignMapMatchesPackages checks that the package map of
// docs/design.md names every package of the mapped trees, and nothing that
// does not exist.
func TestDesignMapMatchesPackages(t *testing.T) {
	doc, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(doc), "## Package map")
	if start < 0 {
		t.Fatal("docs/design.md has no \"## Package map\" section")
	}
	section := string(doc[start:])
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	named := map[string]bool{}
	for _, row := range strings.Split(section, "\n") {
		if !strings.HasPrefix(row, "| `") {
			continue
		}
		cell := strings.SplitN(row, "|", 3)[1]
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cell, -1) {
			named[m[1]] = true
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", module+"/...", module+"/sdk/...", module+"/proto/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	exists := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
		exists[rel] = true
		for _, tree := range mapped {
			if (rel == tree || strings.HasPrefix(rel, tree+"/")) && !named[rel] && !strings.Contains(rel, "/cmd/") {
				t.Errorf("docs/design.md's package map does not name %s", rel)
			}
		}
	}
	for p := range named {
		if !exists[p] {
			t.Errorf("docs/design.md's package map names %s, which is not a package", p)
		}
	}
}
