package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// How a browser gets in
//
// The admin API wants its token on every call, and a browser should not
// keep the token where scripts can read it. The login page takes the token
// once and the runtime answers with a session cookie: HttpOnly (no script
// reads it), SameSite=Strict (no other site's page sends it), Secure and
// __Host- prefixed when the API is served over TLS. The cookie holds no
// secret of its own: it is an expiry time and an HMAC of it keyed with the
// admin token, so the runtime keeps no session table, sessions survive a
// restart, and rotating the token ends them all.
//
// Requests that change anything carry a second proof, the CSRF token: an
// HMAC of the session cookie, which the page fetches from /ui/session (a
// page of another origin cannot read the answer) and sends in the
// X-Twinflow-CSRF header; and their Origin, when the browser sends one,
// must be the runtime's own.

// SessionTTL is how long a console session lasts.
const SessionTTL = 12 * time.Hour

// CSRFHeader is the header that carries the CSRF token.
const CSRFHeader = "X-Twinflow-CSRF"

// ErrNoSession says that a request carries no session cookie.
var ErrNoSession = errors.New("no console session")

// Sessions issues and checks console sessions.
type Sessions struct {
	// Token returns the admin token, the key of the sessions' HMACs.
	Token func() ([]byte, error)
	// Secure marks the cookie Secure and names it with the __Host- prefix:
	// set it when the admin API is served over TLS.
	Secure bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// CookieName is the session cookie's name.
func (s *Sessions) CookieName() string {
	if s.Secure {
		return "__Host-twinflow-session"
	}
	return "twinflow-session"
}

func (s *Sessions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func mac(key []byte, purpose string, data []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil)
}

var b64 = base64.RawURLEncoding

// CheckToken reports whether token is the admin token, in constant time.
func (s *Sessions) CheckToken(token string) (bool, error) {
	want, err := s.Token()
	if err != nil {
		return false, fmt.Errorf("the admin API cannot read its token: %w", err)
	}
	return subtle.ConstantTimeCompare([]byte(token), want) == 1, nil
}

// Issue returns the cookie of a new session.
func (s *Sessions) Issue() (*http.Cookie, error) {
	key, err := s.Token()
	if err != nil {
		return nil, err
	}
	exp := s.now().Add(SessionTTL)
	stamp := binary.BigEndian.AppendUint64(nil, uint64(exp.Unix()))
	value := b64.EncodeToString(append(stamp, mac(key, "twinflow-console-session", stamp)...))
	return s.cookie(value, exp), nil
}

// Expired returns a cookie that ends the session in the browser.
func (s *Sessions) Expired() *http.Cookie {
	c := s.cookie("", time.Time{})
	c.MaxAge = -1
	return c
}

func (s *Sessions) cookie(value string, exp time.Time) *http.Cookie {
	return &http.Cookie{Name: s.CookieName(), Value: value, Path: "/", Expires: exp,
		HttpOnly: true, Secure: s.Secure, SameSite: http.SameSiteStrictMode}
}

// session returns the session cookie's value and expiry when r carries a
// valid one: ErrNoSession when it carries none, another error when its
// cookie is invalid or expired.
func (s *Sessions) session(r *http.Request) (string, time.Time, error) {
	c, err := r.Cookie(s.CookieName())
	if err != nil || c.Value == "" {
		return "", time.Time{}, ErrNoSession
	}
	raw, err := b64.DecodeString(c.Value)
	if err != nil || len(raw) != 8+sha256.Size {
		return "", time.Time{}, errors.New("the console session cookie is malformed: log in again at /ui/login")
	}
	key, err := s.Token()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("the admin API cannot read its token: %w", err)
	}
	if !hmac.Equal(raw[8:], mac(key, "twinflow-console-session", raw[:8])) {
		return "", time.Time{}, errors.New("the console session is not valid (the admin token changed?): log in again at /ui/login")
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(raw[:8])), 0)
	if !s.now().Before(exp) {
		return "", time.Time{}, errors.New("the console session expired: log in again at /ui/login")
	}
	return c.Value, exp, nil
}

// CSRF returns the CSRF token of r's session, and its expiry.
func (s *Sessions) CSRF(r *http.Request) (string, time.Time, error) {
	value, exp, err := s.session(r)
	if err != nil {
		return "", time.Time{}, err
	}
	key, err := s.Token()
	if err != nil {
		return "", time.Time{}, err
	}
	return b64.EncodeToString(mac(key, "twinflow-console-csrf", []byte(value))), exp, nil
}

// Authenticate checks r's session: nil when it has a valid one and, for a
// request that may change something (any method but GET and HEAD), the
// session's CSRF token and an Origin of the runtime's own; ErrNoSession
// when it has no session cookie; another error saying what is wrong.
func (s *Sessions) Authenticate(r *http.Request) error {
	if _, _, err := s.session(r); err != nil {
		return err
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	if err := SameOrigin(r); err != nil {
		return err
	}
	want, _, err := s.CSRF(r)
	if err != nil {
		return err
	}
	if got := r.Header.Get(CSRFHeader); got == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return fmt.Errorf("a console request that changes something needs the session's CSRF token in the %s header (from /ui/session)", CSRFHeader)
	}
	return nil
}

// SameOrigin refuses a request whose Origin header names another origin
// than the one it was sent to. Browsers send Origin with every POST.
func SameOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host != r.Host {
		return fmt.Errorf("request from origin %s refused: the console accepts requests from its own pages only", origin)
	}
	return nil
}
