// Package invoke calls function endpoints over Connect: one client per
// endpoint URL, HTTP/1.1 with keep-alive (cheaper than h2c for small calls
// on loopback), no compression either way (the client does not offer gzip,
// so endpoints answer uncompressed: between a runtime and its endpoints
// bytes are cheaper than CPU), and the endpoint's timeout on every call.
// Every call is signed with the runtime's key, and https:// endpoints may
// have their own CAs and client certificate.
package invoke

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// Options configures a Client.
type Options struct {
	// MaxConnsPerHost bounds the concurrent calls to one endpoint; default
	// 64.
	MaxConnsPerHost int
	// SigningKey signs every call (see [SignatureHeader]); nil sends calls
	// unsigned.
	SigningKey ed25519.PrivateKey
	// TLS holds the TLS configuration of https:// endpoints by URL: their
	// CAs and client certificate. Others use the system's roots.
	TLS map[string]*tls.Config
	// Now is the clock of the signatures' timestamps; default time.Now.
	Now func() time.Time
}

// Client invokes functions on their endpoints.
type Client struct {
	opts       Options
	transports []*http.Transport
	mu         struct {
		sync.Mutex
		clients map[string]twinflowv1connect.FunctionServiceClient // by URL
	}
	https map[*tls.Config]*http.Client // one HTTP client per TLS configuration
}

// New returns a client.
func New(opts Options) *Client {
	if opts.MaxConnsPerHost <= 0 {
		opts.MaxConnsPerHost = 64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Client{opts: opts, https: map[*tls.Config]*http.Client{}}
	c.mu.clients = make(map[string]twinflowv1connect.FunctionServiceClient)
	c.https[nil] = c.newHTTPClient(nil)
	for _, cfg := range opts.TLS {
		if c.https[cfg] == nil {
			c.https[cfg] = c.newHTTPClient(cfg)
		}
	}
	return c
}

func (c *Client) newHTTPClient(cfg *tls.Config) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: c.opts.MaxConnsPerHost,
		MaxConnsPerHost:     c.opts.MaxConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig:     cfg,
		// Without this the transport would ask for gzip on its own.
		DisableCompression: true,
	}
	c.transports = append(c.transports, tr)
	var rt http.RoundTripper = tr
	if c.opts.SigningKey != nil {
		rt = &signer{next: tr, key: c.opts.SigningKey, now: c.opts.Now}
	}
	return &http.Client{Transport: rt}
}

func (c *Client) client(url string) twinflowv1connect.FunctionServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	fc, ok := c.mu.clients[url]
	if !ok {
		fc = twinflowv1connect.NewFunctionServiceClient(c.https[c.opts.TLS[url]], url,
			connect.WithSendMaxBytes(64<<20), connect.WithReadMaxBytes(64<<20),
			connect.WithAcceptCompression("gzip", nil, nil))
		c.mu.clients[url] = fc
	}
	return fc
}

// Invoke makes one call to the endpoint at url, within timeout when it is
// positive.
func (c *Client) Invoke(ctx context.Context, url string, timeout time.Duration, req *twinflowv1.InvokeRequest) (*twinflowv1.InvokeResponse, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := c.client(url).Invoke(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// Rejected reports whether a call failed because the endpoint refused the
// request for good: it found it invalid, and sending it again cannot
// succeed. Every other error (no connection, a timeout, an HTTP 5xx, an
// endpoint that does not know the protocol version or the caller's
// credentials) may pass once the endpoint is fixed, redeployed or back.
func Rejected(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return true
	}
	return false
}

// Close releases idle connections.
func (c *Client) Close() {
	for _, tr := range c.transports {
		tr.CloseIdleConnections()
	}
}
