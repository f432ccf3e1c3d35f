package suite_test

import (
	"testing"

	"github.com/twinflow/twinflow/conformance/suite"
	"github.com/twinflow/twinflow/internal/tsendpoint"
)

// TestTypeScriptReferencePasses runs the suite, signature rules included,
// against the TypeScript reference functions served by the TypeScript SDK
// in a Node process, configured with the suite's public key.
func TestTypeScriptReferencePasses(t *testing.T) {
	signer := newSigner(t)
	url := tsendpoint.Start(t, "../..", "sdk-ts/dist/conformance/server.js", "--listen", "TWINFLOW_VERIFY_KEY="+signer.PublicKey())
	results := runSuite(t, suite.Config{Endpoint: url, Signer: signer})
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Rule.Name, r.Err)
		}
	}
	if len(results) != len(suite.Rules(true)) {
		t.Errorf("%d results for %d rules", len(results), len(suite.Rules(true)))
	}
}

// TestTypeScriptReferenceRefusesUnsignedCalls checks that the suite, run
// without a key against an endpoint that verifies signatures, fails every
// rule with the endpoint's refusal.
func TestTypeScriptReferenceRefusesUnsignedCalls(t *testing.T) {
	url := tsendpoint.Start(t, "../..", "sdk-ts/dist/conformance/server.js", "--listen", "TWINFLOW_VERIFY_KEY="+newSigner(t).PublicKey())
	results := runSuite(t, suite.Config{Endpoint: url})
	if n := len(suite.Failed(results)); n != len(results) {
		t.Errorf("%d of %d rules failed, want all", n, len(results))
	}
	if err := results[len(results)-1].Err; err == nil || !containsAll(err.Error(), "unauthenticated", "no Twinflow-Signature header") {
		t.Errorf("last rule: %v, want the endpoint's refusal of an unsigned call", err)
	}
}
