package suite_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/conformance/suite"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// verifierBreak is a way for an endpoint to verify signatures wrongly.
type verifierBreak struct {
	ignoreClock   bool // accept any signing time
	ignorePath    bool // verify a signature over an empty path
	decodeFirst   bool // decode the body before verifying it
	anyKnownKeyID bool // accept any signature that names a known key id
}

// verifying wraps next in a check of the Twinflow-Signature scheme against
// pub, broken as b says. It is this test's own implementation of the
// scheme, so that the signature rules can be shown to catch the mistakes
// an endpoint could make.
func verifying(next http.Handler, pub ed25519.PublicKey, b verifierBreak) http.Handler {
	sum := sha256.Sum256(pub)
	keyID := hex.EncodeToString(sum[:8])
	refuse := func(w http.ResponseWriter, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"code":"unauthenticated","message":%q}`, msg)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if b.decodeFirst && proto.Unmarshal(body, &twinflowv1.InvokeRequest{}) != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"code":"invalid_argument","message":"the request does not decode"}`)
			return
		}
		fields := map[string]string{}
		for part := range strings.SplitSeq(r.Header.Get(suite.SignatureHeader), ",") {
			k, v, _ := strings.Cut(part, "=")
			fields[k] = v
		}
		t, err := strconv.ParseInt(fields["t"], 10, 64)
		if err != nil {
			refuse(w, "malformed or missing signature")
			return
		}
		sig, err := base64.RawURLEncoding.DecodeString(fields["v1"])
		if err != nil || len(sig) != ed25519.SignatureSize {
			refuse(w, "malformed signature")
			return
		}
		if fields["k"] != keyID {
			refuse(w, "unknown key id")
			return
		}
		if !b.ignoreClock && math.Abs(float64(time.Now().Unix()-t)) > 300 {
			refuse(w, "signed too long ago or ahead")
			return
		}
		path := r.URL.Path
		if b.ignorePath {
			path = ""
		}
		msg := append([]byte("twinflow-v1\n"+fields["t"]+"\n"+path+"\n"), body...)
		if !b.anyKnownKeyID && !ed25519.Verify(pub, msg, sig) {
			refuse(w, "bad signature")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestSignatureRules(t *testing.T) {
	signer := newSigner(t)
	pub, err := base64.StdEncoding.DecodeString(signer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ verifierBreak
		want   map[string]string
	}{
		{name: "a correct verifier"},
		{
			name:   "no clock check",
			break_: verifierBreak{ignoreClock: true},
			want:   map[string]string{"signature/clock-skew": "a call signed 310 s ago: HTTP 200"},
		},
		{
			// Leaving the path out of the signed bytes refuses every honest
			// call, so every rule fails; the first one says why.
			name:   "path left out of the signed bytes",
			break_: verifierBreak{ignorePath: true},
			want: map[string]string{
				"signature/accepted": `a call signed 0s ago: HTTP 401, Connect error unauthenticated: "bad signature"`,
				"batch/in-order":     "the call failed: unauthenticated: bad signature",
			},
		},
		{
			name:   "body decoded before it is verified",
			break_: verifierBreak{decodeFirst: true},
			want:   map[string]string{"signature/missing": "an unsigned call whose body is not protobuf: HTTP 400, Connect error invalid_argument"},
		},
		{
			name:   "signature not checked",
			break_: verifierBreak{anyKnownKeyID: true},
			want: map[string]string{
				"signature/unknown-key": "a call signed with an unknown key under a known key id: HTTP 200",
				"signature/mismatch":    "a call whose body is not the one signed: HTTP 200",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := serve(t, verifying(goHandler(t), pub, tc.break_))
			results := runSuite(t, suite.Config{Endpoint: url, Signer: signer})
			failed := map[string]error{}
			for _, r := range suite.Failed(results) {
				failed[r.Rule.Name] = r.Err
			}
			for name, text := range tc.want {
				if err := failed[name]; err == nil || !strings.Contains(err.Error(), text) {
					t.Errorf("rule %s: %v, want a failure containing %q", name, err, text)
				}
			}
			for name, err := range failed {
				if _, ok := tc.want[name]; !ok && !tc.break_.ignorePath {
					t.Errorf("rule %s failed too: %v", name, err)
				}
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
