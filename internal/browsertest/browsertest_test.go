package browsertest

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestMissingBrowserSaysHowToInstall(t *testing.T) {
	t.Setenv("TWINFLOW_CHROMIUM", "/nonexistent/chromium")
	_, err := Chromium()
	if err == nil || !strings.Contains(err.Error(), "bash .ci/install-chromium.sh") || !strings.Contains(err.Error(), "apt-get install -y chromium") {
		t.Errorf("Chromium() = %v; want an error saying how to install it", err)
	}
}

// TestChecksCatchProblems serves a page that breaks the rules the browser
// tests enforce: the accessibility check and the script-error watch must
// find what is wrong.
func TestChecksCatchProblems(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!doctype html><html lang="en"><head><title>bad</title></head><body><main>
<p style="color:#bbbbbb;background:#ffffff">pale text</p>
<input type="text">
<script>throw new Error("broken page")</script>
</main></body></html>`))
	}))
	defer srv.Close()
	b := Start(t)
	b.Open(srv.URL)
	var ids []string
	for _, v := range b.Violations() {
		ids = append(ids, v.ID)
	}
	for _, want := range []string{"color-contrast", "label"} {
		if !slices.Contains(ids, want) {
			t.Errorf("axe found %v on a page with pale text and an unlabelled input; want %s among them", ids, want)
		}
	}
	b.mu.Lock()
	problems := slices.Clone(b.problems)
	b.problems = nil // expected here: keep the cleanup from failing the test
	b.mu.Unlock()
	if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, "broken page") }) {
		t.Errorf("problems seen %q; want the script error", problems)
	}
}
