// Package invoke calls function endpoints over Connect: one client per
// endpoint URL, HTTP/1.1 with keep-alive (cheaper than h2c for small calls
// on loopback), no compression either way (the client does not offer gzip,
// so endpoints answer uncompressed: between a runtime and its endpoints
// bytes are cheaper than CPU), and the endpoint's timeout on every call.
package invoke

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/runtime/shard"
)

// Client invokes functions on their endpoints.
type Client struct {
	http *http.Client
	mu   struct {
		sync.Mutex
		clients map[string]twinflowv1connect.FunctionServiceClient // by URL
	}
}

// New returns a client whose connection pool allows maxConnsPerHost
// concurrent calls to one endpoint.
func New(maxConnsPerHost int) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: maxConnsPerHost,
		MaxConnsPerHost:     maxConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		// Without this the transport would ask for gzip on its own.
		DisableCompression: true,
	}
	c := &Client{http: &http.Client{Transport: tr}}
	c.mu.clients = make(map[string]twinflowv1connect.FunctionServiceClient)
	return c
}

func (c *Client) client(url string) twinflowv1connect.FunctionServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	fc, ok := c.mu.clients[url]
	if !ok {
		fc = twinflowv1connect.NewFunctionServiceClient(c.http, url,
			connect.WithSendMaxBytes(64<<20), connect.WithReadMaxBytes(64<<20),
			connect.WithAcceptCompression("gzip", nil, nil))
		c.mu.clients[url] = fc
	}
	return fc
}

// Invoke makes one call to ep within its timeout.
func (c *Client) Invoke(ctx context.Context, ep *shard.Endpoint, req *twinflowv1.InvokeRequest) (*twinflowv1.InvokeResponse, error) {
	if ep.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ep.Timeout)
		defer cancel()
	}
	resp, err := c.client(ep.URL).Invoke(ctx, connect.NewRequest(req))
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
func (c *Client) Close() { c.http.CloseIdleConnections() }
