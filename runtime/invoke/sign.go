package invoke

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// SignatureHeader carries the runtime's signature of a call:
//
//	Twinflow-Signature: t=<unix seconds>,k=<key id>,v1=<signature>
//
// The key id is the first 16 lowercase hex characters of the SHA-256 of
// the raw 32-byte Ed25519 public key. The signature is the Ed25519
// signature, in base64url without padding, of the bytes
//
//	"twinflow-v1\n" + t + "\n" + path + "\n" + body
//
// where t is the decimal timestamp as in the header, path is the URL path
// of the request as sent on the request line (without the query), and body
// is the raw request body. An endpoint that knows the public key checks the
// signature and that t is within 300 seconds of its clock before it decodes
// the body: a call it accepts came from the runtime, unaltered, recently.
const SignatureHeader = "Twinflow-Signature"

// Sign returns the SignatureHeader value for a request.
func Sign(key ed25519.PrivateKey, t time.Time, path string, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	msg := make([]byte, 0, len("twinflow-v1\n")+len(ts)+len(path)+len(body)+2)
	msg = append(msg, "twinflow-v1\n"...)
	msg = append(msg, ts...)
	msg = append(msg, '\n')
	msg = append(msg, path...)
	msg = append(msg, '\n')
	msg = append(msg, body...)
	sig := ed25519.Sign(key, msg)
	return "t=" + ts + ",k=" + KeyID(key.Public().(ed25519.PublicKey)) + ",v1=" + base64.RawURLEncoding.EncodeToString(sig)
}

// KeyID is the id of a public key in signatures: the first 16 lowercase
// hex characters of the SHA-256 of its raw 32 bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// signer signs every request it forwards. It reads the whole body, which
// the client sends uncompressed, so that the signature covers the exact
// bytes the endpoint receives.
type signer struct {
	next http.RoundTripper
	key  ed25519.PrivateKey
	now  func() time.Time
}

func (s *signer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("invoke: reading the request body to sign it: %w", err)
		}
		body = b
	}
	signed := req.Clone(req.Context())
	signed.Header.Set(SignatureHeader, Sign(s.key, s.now(), req.URL.EscapedPath(), body))
	signed.Body = io.NopCloser(bytes.NewReader(body))
	signed.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	signed.ContentLength = int64(len(body))
	return s.next.RoundTrip(signed)
}
