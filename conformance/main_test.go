package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/twinflow/twinflow/conformance/reference"
	"github.com/twinflow/twinflow/conformance/suite"
	"github.com/twinflow/twinflow/sdk"
)

func TestPassingEndpoint(t *testing.T) {
	reg := sdk.NewRegistry()
	if err := reference.Register(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sdk.Handler(reg))
	defer srv.Close()

	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"-endpoint", srv.URL}, &out, &errOut); code != 0 {
		t.Fatalf("exit status %d, want 0; output:\n%s%s", code, &out, &errOut)
	}
	n := len(suite.Rules(false))
	for _, r := range suite.Rules(false) {
		if !strings.Contains(out.String(), "PASS "+r.Name+": "+r.Doc+"\n") {
			t.Errorf("the output does not say that %s passed:\n%s", r.Name, &out)
		}
	}
	for _, want := range []string{"signature rules not checked", "\n" + strconv.Itoa(n) + " passed, 0 failed\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output does not say %q:\n%s", want, &out)
		}
	}
}

func TestFailingEndpoint(t *testing.T) {
	// An endpoint that serves nothing breaks every rule.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()

	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"-endpoint", srv.URL}, &out, &errOut); code != 1 {
		t.Fatalf("exit status %d, want 1; output:\n%s%s", code, &out, &errOut)
	}
	if !strings.Contains(out.String(), "FAIL batch/in-order: ") || !strings.Contains(out.String(), "the call failed: unimplemented: 404 Not Found") {
		t.Errorf("the output does not give the failure and its reason:\n%s", &out)
	}
	if !regexp.MustCompile(`\n0 passed, \d+ failed\n$`).MatchString(out.String()) {
		t.Errorf("the output does not end with the count of failures:\n%s", &out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"-endpoint", "127.0.0.1:9000"}, {"-endpoint", "http://x", "extra"}, {"-endpoint", "http://x", "-sign-key", "/no/such/file"}} {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, &out, &errOut)
		if code == 0 || errOut.Len() == 0 {
			t.Errorf("%q: exit status %d and %q, want a failure that says why", args, code, errOut.String())
		}
	}
}

func TestNewKey(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"-new-key"}, &out, &errOut); code != 0 {
		t.Fatalf("exit status %d: %s", code, &errOut)
	}
	m := regexp.MustCompile(`private key \(for -sign-key\): (\S+)\npublic key \(for the endpoint's TWINFLOW_VERIFY_KEY\): (\S+)\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("unexpected output %q", &out)
	}
	key, err := suite.ParseSigningKey(m[1])
	if err != nil {
		t.Fatal(err)
	}
	s, err := suite.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	if s.PublicKey() != m[2] {
		t.Errorf("public key %s does not belong to the private key (its public key is %s)", m[2], s.PublicKey())
	}
	// The printed private key works as a -sign-key file.
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	out.Reset()
	run(t.Context(), []string{"-endpoint", srv.URL, "-sign-key", path}, &out, &errOut)
	if !strings.Contains(out.String(), "FAIL signature/missing") {
		t.Errorf("with -sign-key the signature rules do not run:\n%s", &out)
	}
}
