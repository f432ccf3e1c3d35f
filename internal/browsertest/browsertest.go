// Package browsertest drives a real browser in tests of the console's web
// pages: Debian's chromium package, headless, through the DevTools protocol
// (github.com/chromedp/chromedp). It logs in, waits for what a page shows,
// writes screenshots as test artifacts, runs the axe-core accessibility
// checks (vendored in axe/, MPL-2.0) and fails a test on any script error or
// any request that leaves the machine.
//
// The browser is /usr/bin/chromium, or $TWINFLOW_CHROMIUM. Without one a
// test fails, saying how to install it: bash .ci/install-chromium.sh.
package browsertest

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultChromium is where Debian's chromium package puts the browser.
const DefaultChromium = "/usr/bin/chromium"

//go:embed axe/axe.min.js
var axeSource string

// waitFor bounds every wait: a safety net against hangs, not a measure of
// speed.
const waitFor = 60 * time.Second

// Browser is a headless Chromium with one tab, for one test.
type Browser struct {
	t         testing.TB
	ctx       context.Context
	artifacts string

	mu       sync.Mutex
	problems []string // script errors and requests beyond loopback
}

// Chromium returns the browser to run, or an error saying how to install
// one.
func Chromium() (string, error) {
	exe := DefaultChromium
	if env := os.Getenv("TWINFLOW_CHROMIUM"); env != "" {
		exe = env
	}
	if _, err := os.Stat(exe); err != nil {
		return "", fmt.Errorf("the console's browser tests need Chromium, and there is none at %s (%v). "+
			"Install it with: bash .ci/install-chromium.sh (it runs apt-get install -y chromium; the CI runs it), "+
			"or set TWINFLOW_CHROMIUM to a Chrome or Chromium binary", exe, err)
	}
	return exe, nil
}

// Start starts a browser with a fresh profile, for the test's duration.
func Start(t testing.TB) *Browser {
	t.Helper()
	exe, err := Chromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &Browser{t: t, ctx: ctx, artifacts: artifactDir(t)}
	// The first action starts the browser, and must have no deadline: the
	// browser lives as long as the context of that first call.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	if err := chromedp.Listen(ctx, b.watch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.checkProblems)
	return b
}

// artifactDir is where screenshots go: $TWINFLOW_ARTIFACTS, else a
// directory in the system's temporary directory, made afresh by each run.
func artifactDir(t testing.TB) string {
	dir := os.Getenv("TWINFLOW_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "twinflow-console-artifacts", strings.ReplaceAll(t.Name(), "/", "_"))
		_ = os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots go to %s", dir)
	return dir
}

// watch records script errors, console and browser-log errors (a resource
// that failed to load among them), and requests that leave the machine: the
// pages must work without any network beyond the runtime.
func (b *Browser) watch(ev any) {
	var problem string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		problem = "script error: " + d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			problem += ": " + d.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
			}
			problem = "console error: " + strings.Join(parts, " ")
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			problem = "browser error: " + ev.Entry.Text + " " + ev.Entry.URL
		}
	case *network.EventRequestWillBeSent:
		u, err := url.Parse(ev.Request.URL)
		if err == nil && u.Scheme != "data" && u.Scheme != "about" && u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" {
			problem = "request beyond the machine: " + ev.Request.URL
		}
	}
	if problem != "" {
		b.mu.Lock()
		b.problems = append(b.problems, problem)
		b.mu.Unlock()
	}
}

func (b *Browser) checkProblems() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("in the browser: %s", p)
	}
}

// Do runs chromedp actions, failing the test on an error.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("in the browser: %v\nthe page shows:\n%s", err, b.text())
	}
}

// Run runs one chromedp action and returns its value, failing the test on
// an error.
func Run[T any](b *Browser, action chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitFor)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		b.t.Fatalf("in the browser: %v\nthe page shows:\n%s", err, b.text())
	}
	return v
}

// Eval evaluates a JavaScript expression in the page.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	return Run(b, chromedp.Evaluate[T](expr))
}

// ClickLive clicks the element selector finds, in one step in the page: an
// element of a part of the page that live updates redraw may be replaced
// between the lookup and the click of chromedp.Click.
func (b *Browser) ClickLive(selector string) {
	b.t.Helper()
	sel, err := json.Marshal(selector)
	if err != nil {
		b.t.Fatal(err)
	}
	if !Eval[bool](b, fmt.Sprintf(`(() => { const el = document.querySelector(%s); el?.click(); return el != null })()`, sel)) {
		b.t.Fatalf("in the browser: nothing to click at %s\nthe page shows:\n%s", selector, b.text())
	}
}

// Open loads a URL and waits for the page's body.
func (b *Browser) Open(u string) {
	b.t.Helper()
	b.Do(chromedp.Navigate(u), chromedp.WaitReady(chromedp.CSS("body")))
}

// Login logs in with a login link, as twinflow console prints it: the
// token in the fragment. It returns once the page at next is shown.
func (b *Browser) Login(adminURL, token, next string) {
	b.t.Helper()
	b.Open(adminURL + "/ui/login?next=" + url.QueryEscape(next) + "#token=" + url.QueryEscape(token))
	b.WaitJS("the page after logging in", fmt.Sprintf("location.pathname === %q", strings.SplitN(next, "#", 2)[0]))
}

// WaitJS waits until the JavaScript expression is true. It asks again
// every 50 ms, also across page loads (while a page loads, the expression
// cannot run).
func (b *Browser) WaitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(waitFor)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("waiting for %s (%s): not true after %s (last error: %v)\nthe page shows:\n%s", what, expr, waitFor, last, b.text())
}

// WaitText waits until the element selected by the CSS selector holds text.
func (b *Browser) WaitText(what, selector, text string) {
	b.t.Helper()
	b.WaitJS(what, fmt.Sprintf("(document.querySelector(%q)||{}).textContent?.includes(%q)", selector, text))
}

// Text returns the text of the element selected, as shown.
func (b *Browser) Text(selector string) string {
	b.t.Helper()
	return Eval[string](b, fmt.Sprintf("(document.querySelector(%q)||{}).innerText||''", selector))
}

func (b *Browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string]("location.href + '\\n' + document.body.innerText"))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return s
}

// Screenshot writes a PNG of the whole page as name.png among the test's
// artifacts and returns its path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	png := Run(b, chromedp.FullScreenshot(100))
	path := filepath.Join(b.artifacts, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return path
}

// Violation is one accessibility rule the page breaks, as axe-core reports
// it.
type Violation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target         []any  `json:"target"`
		FailureSummary string `json:"failureSummary"`
	} `json:"nodes"`
}

// Accessible runs axe-core's WCAG 2.1 A and AA rules (contrast, labels,
// names, structure) on the page, and fails the test for every violation.
func (b *Browser) Accessible(page string) {
	b.t.Helper()
	for _, v := range b.Violations() {
		var where []string
		for _, n := range v.Nodes {
			where = append(where, fmt.Sprintf("%v: %s", n.Target, strings.ReplaceAll(n.FailureSummary, "\n", " ")))
		}
		b.t.Errorf("accessibility of %s: %s (%s, %s):\n  %s", page, v.ID, v.Impact, v.Help, strings.Join(where, "\n  "))
	}
}

// Violations runs axe-core on the page and returns what it finds.
func (b *Browser) Violations() []Violation {
	b.t.Helper()
	if !Eval[bool](b, axeSource+";typeof axe === 'object'") {
		b.t.Fatal("axe-core did not load in the page")
	}
	found := Run(b, chromedp.Evaluate[string](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}, resultTypes: ["violations"]})
		.then(r => JSON.stringify(r.violations))`, chromedp.EvalAwaitPromise))
	var out []Violation
	if err := json.Unmarshal([]byte(found), &out); err != nil {
		b.t.Fatal(err)
	}
	return out
}
