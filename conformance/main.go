// Command conformance checks that a function endpoint speaks the Twinflow
// function protocol correctly. The endpoint must serve the reference
// functions of conformance/README.md, written with the SDK under test:
//
//	go run ./conformance -endpoint http://127.0.0.1:9000
//
// It prints each rule with PASS or FAIL and the reason, and exits with
// status 1 when any rule failed. With -sign-key it signs every call and
// also checks that the endpoint refuses calls that are unsigned or signed
// wrongly; the endpoint must then be configured with the matching public
// key, which -new-key prints along with a new private key.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/twinflow/twinflow/conformance/suite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command and returns its exit status: 0 when every rule
// passed, 1 when one failed, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "", "base URL of the endpoint serving the reference functions, e.g. http://127.0.0.1:9000")
	signKey := fs.String("sign-key", "", "file holding an Ed25519 private key (standard base64 of the 32-byte seed or the 64-byte key): sign every call and check signature verification")
	newKey := fs.Bool("new-key", false, "print a new private key for -sign-key and its public key for the endpoint, then exit")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on each call")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: conformance -endpoint URL [-sign-key FILE] | conformance -new-key\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "conformance: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *newKey {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			fmt.Fprintf(stderr, "conformance: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "private key (for -sign-key): %s\npublic key (for the endpoint's TWINFLOW_VERIFY_KEY): %s\n",
			base64.StdEncoding.EncodeToString(priv.Seed()), base64.StdEncoding.EncodeToString(pub))
		return 0
	}
	if *endpoint == "" {
		fmt.Fprintln(stderr, "conformance: -endpoint is required")
		fs.Usage()
		return 2
	}
	cfg := suite.Config{Endpoint: *endpoint, Timeout: *timeout}
	if *signKey != "" {
		text, err := os.ReadFile(*signKey)
		if err != nil {
			fmt.Fprintf(stderr, "conformance: %v\n", err)
			return 2
		}
		key, err := suite.ParseSigningKey(string(text))
		if err != nil {
			fmt.Fprintf(stderr, "conformance: %s: %v\n", *signKey, err)
			return 2
		}
		if cfg.Signer, err = suite.NewSigner(key); err != nil {
			fmt.Fprintf(stderr, "conformance: %v\n", err)
			return 2
		}
	}

	fmt.Fprintf(stdout, "checking %s\n", *endpoint)
	results, err := suite.Run(ctx, cfg, func(r suite.Result) {
		if r.Err == nil {
			fmt.Fprintf(stdout, "PASS %s: %s\n", r.Rule.Name, r.Rule.Doc)
			return
		}
		fmt.Fprintf(stdout, "FAIL %s: %s\n     %s\n", r.Rule.Name, r.Rule.Doc, strings.ReplaceAll(r.Err.Error(), "\n", "\n     "))
	})
	if err != nil {
		fmt.Fprintf(stderr, "conformance: %v\n", err)
		return 1
	}
	if cfg.Signer == nil {
		fmt.Fprintln(stdout, "signature rules not checked: give -sign-key to check them")
	}
	failed := len(suite.Failed(results))
	fmt.Fprintf(stdout, "%d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
