package sdk_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestForbiddenImports keeps the SDK free of the runtime: function authors
// import the SDK, and the SDK and the runtime meet only on the wire. Inside
// the module, the SDK may import only itself and the generated protocol
// code (which imports nothing of the module but itself).
func TestForbiddenImports(t *testing.T) {
	const module = "github.com/twinflow/twinflow/"
	allowed := func(path string) bool {
		return path == module+"sdk" || strings.HasPrefix(path, module+"sdk/") || strings.HasPrefix(path, module+"proto/gen/")
	}
	for _, dir := range []string{".", "sdktest"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		must(t, err)
		if len(files) == 0 {
			t.Fatalf("no Go files in %s", dir)
		}
		for _, file := range files {
			src, err := os.ReadFile(file)
			must(t, err)
			f, err := parser.ParseFile(token.NewFileSet(), file, src, parser.ImportsOnly)
			must(t, err)
			for _, imp := range f.Imports {
				path, err := strconv.Unquote(imp.Path.Value)
				must(t, err)
				if strings.HasPrefix(path, module) && !allowed(path) {
					t.Errorf("%s imports %s; inside the module the SDK may import only sdk/... and proto/gen/...", file, path)
				}
			}
		}
	}
}
