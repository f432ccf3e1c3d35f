package sdk

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
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
// where t is the timestamp as written in the header, path the URL path of
// the request as sent on the request line (without the query), and body
// the raw request body. Fields other than t, k and v1 are ignored.
const SignatureHeader = "Twinflow-Signature"

// MaxSignatureAge is how far a call's timestamp may be from the endpoint's
// clock, either way, for the call to be accepted.
const MaxSignatureAge = 300 * time.Second

// VerifyKeyEnv is the environment variable [VerifyKeysFromEnv] reads: the
// runtime's public keys, base64 (standard, padded) of the raw 32 bytes,
// separated by commas (two during a key rotation). twinflow keys prints
// it.
const VerifyKeyEnv = "TWINFLOW_VERIFY_KEY"

// maxSignedBody bounds the body read to verify a call: the runtime sends at
// most 64 MiB.
const maxSignedBody = 64 << 20

// WithVerifyKeys makes [Handler] accept only calls signed by the runtime
// with one of keys: unsigned, malformed, unknown-key, stale or altered
// calls are refused with the unauthenticated code, before their body is
// decoded, and no function runs. Give it the runtime's public key (two
// during a key rotation); see [SignatureHeader] for the scheme.
func WithVerifyKeys(keys ...ed25519.PublicKey) HandlerOption {
	src := fixedKeys(keys)
	return handlerOptionFunc(func(c *handlerConfig) { c.verify = src.keys })
}

// WithLocalRuntimeKeys makes [Handler] accept only calls signed with the
// key of the runtime started last by this user on this machine, as
// [WithVerifyKeys] does. The keys are read when calls come, from the
// pointer twinflow run writes ($XDG_RUNTIME_DIR/twinflow/current, else
// twinflow/current in the user's configuration directory, both private to
// the user), so the endpoint may start before the runtime. It is meant for
// development on one machine; elsewhere give the keys.
func WithLocalRuntimeKeys() HandlerOption {
	src := &localKeys{}
	return handlerOptionFunc(func(c *handlerConfig) { c.verify = src.keys })
}

// VerifyFromEnv returns the option that verifies calls as an endpoint
// should by default: with the keys in TWINFLOW_VERIFY_KEY, or when it is
// unset or empty, with the local runtime's ([WithLocalRuntimeKeys]).
func VerifyFromEnv() (HandlerOption, error) {
	keys, err := VerifyKeysFromEnv()
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return WithLocalRuntimeKeys(), nil
	}
	return WithVerifyKeys(keys...), nil
}

// VerifyKeysFromEnv parses TWINFLOW_VERIFY_KEY ([VerifyKeyEnv]). It
// returns nil keys and no error when the variable is unset or empty.
func VerifyKeysFromEnv() ([]ed25519.PublicKey, error) {
	v := strings.TrimSpace(os.Getenv(VerifyKeyEnv))
	if v == "" {
		return nil, nil
	}
	keys, err := ParseVerifyKeys(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", VerifyKeyEnv, err)
	}
	return keys, nil
}

// ParseVerifyKeys parses public keys separated by commas, each base64
// (standard, padded) of the raw 32-byte Ed25519 key.
func ParseVerifyKeys(s string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		b, err := base64.StdEncoding.DecodeString(part)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %d (%q) is not an Ed25519 public key: want base64 of %d bytes (twinflow keys prints the runtime's)", i+1, part, ed25519.PublicKeySize)
		}
		keys = append(keys, ed25519.PublicKey(b))
	}
	return keys, nil
}

// keyID is the id of a public key in signatures.
func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

type fixedKeys []ed25519.PublicKey

func (k fixedKeys) keys() ([]ed25519.PublicKey, error) {
	if len(k) == 0 {
		return nil, errors.New("the endpoint was given no key to verify calls with")
	}
	return k, nil
}

// localKeys reads the local runtime's keys from its pointer, again when
// the pointer file changes.
type localKeys struct {
	mu   sync.Mutex
	mod  time.Time
	last []ed25519.PublicKey
}

func (l *localKeys) keys() ([]ed25519.PublicKey, error) {
	path, err := runtimePointer()
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("no key to verify calls with: no runtime has started on this machine (%s is missing); "+
			"set %s to the runtime's public key (twinflow keys prints it)", path, VerifyKeyEnv)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last != nil && fi.ModTime().Equal(l.mod) {
		return l.last, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var info struct {
		SigningKeys []string `json:"signing_keys"`
	}
	if err := json.Unmarshal(b, &info); err != nil || len(info.SigningKeys) == 0 {
		return nil, fmt.Errorf("no key to verify calls with in %s; set %s to the runtime's public key", path, VerifyKeyEnv)
	}
	keys, err := ParseVerifyKeys(strings.Join(info.SigningKeys, ","))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.last, l.mod = keys, fi.ModTime()
	return keys, nil
}

// runtimePointer is where twinflow run writes how to reach the runtime it
// started last, as package runinfo of the runtime does.
func runtimePointer() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "twinflow", "current"), nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "twinflow", "current"), nil
}

// verifier refuses calls that the runtime did not sign.
type verifier struct {
	next   http.Handler
	keys   func() ([]ed25519.PublicKey, error)
	now    func() time.Time
	errors *connect.ErrorWriter
}

func (v *verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := v.verify(r)
	if err != nil {
		v.refuse(w, r, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	v.next.ServeHTTP(w, r)
}

// verify checks the call's signature and returns its body.
func (v *verifier) verify(r *http.Request) ([]byte, error) {
	header := r.Header.Get(SignatureHeader)
	if header == "" {
		return nil, fmt.Errorf("missing %s header: this endpoint accepts only calls signed by the Twinflow runtime", SignatureHeader)
	}
	ts, kid, sig, err := parseSignature(header)
	if err != nil {
		return nil, fmt.Errorf("malformed %s header: %w", SignatureHeader, err)
	}
	keys, err := v.keys()
	if err != nil {
		return nil, err
	}
	var key ed25519.PublicKey
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = "k=" + keyID(k)
		if ids[i] == "k="+kid {
			key = k
		}
	}
	if key == nil {
		return nil, fmt.Errorf("the call is signed with key k=%s, which this endpoint does not accept (it accepts %s); give it the runtime's public key (%s, or twinflow keys)",
			kid, strings.Join(ids, ", "), VerifyKeyEnv)
	}
	t, _ := strconv.ParseInt(ts, 10, 64)
	if skew := v.now().Sub(time.Unix(t, 0)); skew > MaxSignatureAge || skew < -MaxSignatureAge {
		return nil, fmt.Errorf("the call's signature time t=%s is %s from this endpoint's clock, more than %s: a replayed call, or clocks out of step",
			ts, skew.Abs().Round(time.Second), MaxSignatureAge)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the call: %w", err)
	}
	if len(body) > maxSignedBody {
		return nil, fmt.Errorf("the call's body exceeds %d bytes", maxSignedBody)
	}
	path := r.RequestURI
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" || path[0] != '/' {
		path = r.URL.EscapedPath()
	}
	var msg bytes.Buffer
	msg.Grow(len("twinflow-v1\n") + len(ts) + len(path) + len(body) + 2)
	msg.WriteString("twinflow-v1\n" + ts + "\n" + path + "\n")
	msg.Write(body)
	if !ed25519.Verify(key, msg.Bytes(), sig) {
		return nil, fmt.Errorf("the signature does not verify with key k=%s: the call was altered, or signed for another path (%s) or time", kid, path)
	}
	return body, nil
}

// parseSignature splits "t=...,k=...,v1=...".
func parseSignature(h string) (ts, kid string, sig []byte, err error) {
	var v1 string
	for _, field := range strings.Split(h, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok {
			return "", "", nil, fmt.Errorf("field %q is not name=value", field)
		}
		var dst *string
		switch name {
		case "t":
			dst = &ts
		case "k":
			dst = &kid
		case "v1":
			dst = &v1
		default:
			continue
		}
		if *dst != "" {
			return "", "", nil, fmt.Errorf("%s appears twice", name)
		}
		*dst = value
	}
	switch {
	case ts == "" || kid == "" || v1 == "":
		return "", "", nil, errors.New("want t=<unix seconds>,k=<key id>,v1=<signature>")
	case strings.TrimLeft(ts, "0123456789") != "" || len(ts) > 12:
		return "", "", nil, fmt.Errorf("t=%s is not a time in unix seconds", ts)
	case len(kid) != 16 || strings.Trim(kid, "0123456789abcdef") != "":
		return "", "", nil, fmt.Errorf("k=%s is not a key id (16 lowercase hex characters)", kid)
	}
	sig, err = base64.RawURLEncoding.DecodeString(v1)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return "", "", nil, fmt.Errorf("v1 is not an Ed25519 signature in base64url without padding")
	}
	return ts, kid, sig, nil
}

// refuse answers with the unauthenticated code, as a Connect, gRPC or
// gRPC-Web error when the caller speaks one of them.
func (v *verifier) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if v.errors.IsSupported(r) {
		_ = v.errors.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
		return
	}
	http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
}
