package state

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports keeps the storage layer a leaf of the runtime: it may use the
// generated protos and keygroup, and nothing else of the module (in
// particular neither the shard that uses it nor the SDK).
func TestImports(t *testing.T) {
	const module = "github.com/twinflow/twinflow/"
	allowed := map[string]bool{
		module + "proto/gen/twinflow/v1":         true,
		module + "proto/gen/twinflow/storage/v1": true,
		module + "runtime/keygroup":              true,
	}
	for _, dir := range []string{".", "../keygroup"} {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pkg.Imports {
			if strings.HasPrefix(imp, module) && (!allowed[imp] || dir == "../keygroup") {
				t.Errorf("package %s imports %s", pkg.Name, imp)
			}
		}
	}
}
