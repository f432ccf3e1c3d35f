package suite

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// SignatureHeader is the request header carrying a call's signature:
//
//	Twinflow-Signature: t=<unix seconds>,k=<key id>,v1=<signature>
//
// The key id is the first 16 lowercase hex characters of the SHA-256 of
// the raw 32-byte Ed25519 public key; the signature is the unpadded
// base64url Ed25519 signature of "twinflow-v1\n" + t + "\n" + the
// request's URL path + "\n" + the raw request body.
const SignatureHeader = "Twinflow-Signature"

// MaxClockSkew is how far a signature's time may be from the endpoint's
// clock, either way, before the endpoint refuses the call.
const MaxClockSkew = 300 * time.Second

// Signer signs calls with an Ed25519 private key.
type Signer struct {
	key   ed25519.PrivateKey
	keyID string
}

// NewSigner returns a signer for key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("an Ed25519 private key has %d bytes, not %d", ed25519.PrivateKeySize, len(key))
	}
	return &Signer{key: key, keyID: KeyID(key.Public().(ed25519.PublicKey))}, nil
}

// ParseSigningKey reads a private key given as standard base64 of either
// the 32-byte seed or the 64-byte private key; surrounding space is ignored.
func ParseSigningKey(text string) (ed25519.PrivateKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("signing key: not standard base64: %w", err)
	}
	switch len(b) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(b), nil
	case ed25519.PrivateKeySize:
		return ed25519.PrivateKey(b), nil
	}
	return nil, fmt.Errorf("signing key: %d bytes, want a %d-byte Ed25519 seed or a %d-byte private key", len(b), ed25519.SeedSize, ed25519.PrivateKeySize)
}

// PublicKey returns the public key, as an endpoint is configured with it:
// standard base64 of its 32 bytes.
func (s *Signer) PublicKey() string {
	return base64.StdEncoding.EncodeToString(s.key.Public().(ed25519.PublicKey))
}

// KeyID returns the key id of a public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Header returns the signature header value of a request with the path and
// body, signed at time t.
func (s *Signer) Header(t time.Time, path string, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",k=" + s.keyID + ",v1=" + s.sign(ts, path, body)
}

func (s *Signer) sign(ts, path string, body []byte) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(s.key, signedBytes(ts, path, body)))
}

// signedBytes returns what a signature covers.
func signedBytes(ts, path string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("twinflow-v1\n")
	b.WriteString(ts)
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	b.Write(body)
	return b.Bytes()
}

// signingTransport signs every request it sends.
type signingTransport struct {
	base   http.RoundTripper
	signer *Signer
	now    func() time.Time
}

func (t *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.Header.Set(SignatureHeader, t.signer.Header(t.now(), req.URL.Path, body))
	return t.base.RoundTrip(r)
}

// errUnsigned is what the signature rules report when run without a signer.
var errUnsigned = errors.New("no signing key: the suite cannot check signatures")

func signatureRules() []Rule {
	return []Rule{
		{"signature/accepted", "a call signed with a configured key within 300 s of the endpoint's clock is served", checkSignatureAccepted},
		{"signature/missing", "an unsigned call is refused with HTTP 401 and the unauthenticated code, even when its body is not a request", checkSignatureMissing},
		{"signature/malformed", "a call whose Twinflow-Signature header is malformed is refused with HTTP 401 and the unauthenticated code", checkSignatureMalformed},
		{"signature/unknown-key", "a call signed with a key the endpoint was not given is refused with HTTP 401 and the unauthenticated code", checkSignatureUnknownKey},
		{"signature/mismatch", "a call whose signature does not cover its body, path or time is refused with HTTP 401 and the unauthenticated code", checkSignatureMismatch},
		{"signature/clock-skew", "a call signed more than 300 s before or after the endpoint's clock is refused with HTTP 401 and the unauthenticated code", checkSignatureClockSkew},
	}
}

// signedCall is one raw call of the signature rules.
type signedCall struct {
	name   string
	path   string
	body   []byte
	header string // the Twinflow-Signature header; "" for none
}

func (c *client) validBody() []byte {
	b, err := proto.Marshal(request(counterBatch("signed", counterState(nil, nil, nil), inv(i64(1)))))
	if err != nil {
		panic(err) // a valid message always encodes
	}
	return b
}

func (c *client) sendSigned(ctx context.Context, call signedCall) (rawResponse, error) {
	if call.path == "" {
		call.path = twinflowv1connect.FunctionServiceInvokeProcedure
	}
	h := http.Header{}
	if call.header != "" {
		h.Set(SignatureHeader, call.header)
	}
	return c.send(ctx, c.plain, call.path, call.body, h)
}

// wantRefused makes each call and checks that the endpoint refuses it as
// unauthenticated.
func (c *client) wantRefused(ctx context.Context, calls ...signedCall) error {
	for _, call := range calls {
		resp, err := c.sendSigned(ctx, call)
		if err != nil {
			return fmt.Errorf("%s: %w", call.name, err)
		}
		if resp.status != http.StatusUnauthorized || resp.code != connect.CodeUnauthenticated.String() {
			return fmt.Errorf("%s: %s, want HTTP 401 with the unauthenticated code", call.name, resp)
		}
		if resp.message == "" {
			return fmt.Errorf("%s: refused without a message saying why", call.name)
		}
	}
	return nil
}

func checkSignatureAccepted(ctx context.Context, c *client) error {
	if c.cfg.Signer == nil {
		return errUnsigned
	}
	path := twinflowv1connect.FunctionServiceInvokeProcedure
	body := c.validBody()
	for _, age := range []time.Duration{0, 250 * time.Second, -250 * time.Second} {
		resp, err := c.sendSigned(ctx, signedCall{body: body, header: c.cfg.Signer.Header(c.cfg.Now().Add(-age), path, body)})
		if err != nil {
			return err
		}
		if resp.status != http.StatusOK {
			return fmt.Errorf("a call signed %v ago: %s, want it served", age, resp)
		}
	}
	return nil
}

func checkSignatureMissing(ctx context.Context, c *client) error {
	if c.cfg.Signer == nil {
		return errUnsigned
	}
	return c.wantRefused(ctx,
		signedCall{name: "an unsigned call", body: c.validBody()},
		// Verified before decoded: garbage is refused as unsigned, not
		// as malformed.
		signedCall{name: "an unsigned call whose body is not protobuf", body: []byte{0xff, 0xff, 0xff}},
	)
}

func checkSignatureMalformed(ctx context.Context, c *client) error {
	s := c.cfg.Signer
	if s == nil {
		return errUnsigned
	}
	body := c.validBody()
	now := strconv.FormatInt(c.cfg.Now().Unix(), 10)
	sig := s.sign(now, twinflowv1connect.FunctionServiceInvokeProcedure, body)
	var calls []signedCall
	for _, h := range []struct{ name, header string }{
		{"garbage", "garbage"},
		{"no time", "k=" + s.keyID + ",v1=" + sig},
		{"no key id", "t=" + now + ",v1=" + sig},
		{"no signature", "t=" + now + ",k=" + s.keyID},
		{"a time that is not a number", "t=soon,k=" + s.keyID + ",v1=" + sig},
		{"a signature that is not base64url", "t=" + now + ",k=" + s.keyID + ",v1=" + "!!!!"},
		{"a signature of the wrong length", "t=" + now + ",k=" + s.keyID + ",v1=" + sig[:20]},
		{"empty fields", "t=,k=,v1="},
	} {
		calls = append(calls, signedCall{name: "a signature header with " + h.name + fmt.Sprintf(" (%q)", h.header), body: body, header: h.header})
	}
	return c.wantRefused(ctx, calls...)
}

func checkSignatureUnknownKey(ctx context.Context, c *client) error {
	if c.cfg.Signer == nil {
		return errUnsigned
	}
	_, other, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	stranger, err := NewSigner(other)
	if err != nil {
		return err
	}
	body := c.validBody()
	now := c.cfg.Now()
	path := twinflowv1connect.FunctionServiceInvokeProcedure
	// The stranger's signature under the known key id, too: the id only
	// picks the key, it proves nothing.
	forged := "t=" + strconv.FormatInt(now.Unix(), 10) + ",k=" + c.cfg.Signer.keyID + ",v1=" + stranger.sign(strconv.FormatInt(now.Unix(), 10), path, body)
	return c.wantRefused(ctx,
		signedCall{name: "a call signed with an unknown key", body: body, header: stranger.Header(now, path, body)},
		signedCall{name: "a call signed with an unknown key under a known key id", body: body, header: forged},
	)
}

func checkSignatureMismatch(ctx context.Context, c *client) error {
	s := c.cfg.Signer
	if s == nil {
		return errUnsigned
	}
	body := c.validBody()
	other, err := proto.Marshal(request(counterBatch("signed", counterState(nil, nil, nil), inv(i64(1000)))))
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	path := twinflowv1connect.FunctionServiceInvokeProcedure
	sig := s.sign(strconv.FormatInt(now.Unix(), 10), path, body)
	return c.wantRefused(ctx,
		signedCall{name: "a call whose body is not the one signed", body: other, header: s.Header(now, path, body)},
		signedCall{name: "a call signed for another path", body: body, header: s.Header(now, "/other"+path, body)},
		signedCall{name: "a call whose time is not the one signed", body: body,
			header: "t=" + strconv.FormatInt(now.Unix()-1, 10) + ",k=" + s.keyID + ",v1=" + sig},
	)
}

func checkSignatureClockSkew(ctx context.Context, c *client) error {
	s := c.cfg.Signer
	if s == nil {
		return errUnsigned
	}
	body := c.validBody()
	now := c.cfg.Now()
	path := twinflowv1connect.FunctionServiceInvokeProcedure
	// 10 s outside the window: a signature's time is in whole seconds,
	// cut down, so one made 301 s ahead may reach the endpoint less than
	// 300 s ahead.
	return c.wantRefused(ctx,
		signedCall{name: "a call signed 310 s ago", body: body, header: s.Header(now.Add(-310*time.Second), path, body)},
		signedCall{name: "a call signed 310 s ahead", body: body, header: s.Header(now.Add(310*time.Second), path, body)},
		signedCall{name: "a call signed an hour ago", body: body, header: s.Header(now.Add(-time.Hour), path, body)},
	)
}
