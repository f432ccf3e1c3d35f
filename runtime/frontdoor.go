package runtime

import (
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// defaultIngressAddr is where the HTTP/Connect front door listens unless
// told otherwise (a free port when it is taken).
const defaultIngressAddr = "127.0.0.1:8080"

// IngressOff, as Config.IngressAddr, serves no HTTP/Connect front door.
const IngressOff = "off"

// wrapDoorWriter, when set, wraps the front door's writer; tests use it to
// crash the engine between a durable write and its acknowledgements.
var wrapDoorWriter func(frontdoor.Writer) frontdoor.Writer

// directRead returns how far the direct stream has been read, for the
// front door's backpressure. One process reads it itself. In cluster mode
// the router, on whichever worker owns key group 0, reads it and purges it
// below what it routed: the stream's first sequence says how far that is,
// asked at most every readEvery, off the door's path.
func (e *Engine) directRead(js jetstream.JetStream) func() uint64 {
	if e.cl == nil {
		direct := e.reads[0] // the direct ingress's reader, built first
		return direct.Position
	}
	const readEvery = 100 * time.Millisecond
	var (
		read   atomic.Uint64
		asked  atomic.Int64 // unix nanoseconds
		asking atomic.Bool
	)
	return func() uint64 {
		if time.Since(time.Unix(0, asked.Load())) >= readEvery && asking.CompareAndSwap(false, true) {
			asked.Store(time.Now().UnixNano())
			go func() {
				defer asking.Store(false)
				ctx, cancel := context.WithTimeout(context.Background(), readEvery)
				defer cancel()
				if st, err := js.Stream(ctx, DirectStream); err == nil && st.CachedInfo().State.FirstSeq > read.Load()+1 {
					read.Store(st.CachedInfo().State.FirstSeq - 1)
				}
			}()
		}
		return read.Load()
	}
}

// startFrontDoor starts the front door: its own NATS connection, the door
// writing batches into the direct ingress stream, its NATS subscriptions,
// and its HTTP/Connect listener.
func (e *Engine) startFrontDoor() error {
	nc, js, err := natsbus.Connect(e.doorConn)
	if err != nil {
		return fmt.Errorf("front door: %w", err)
	}
	e.doorNC = nc
	var w frontdoor.Writer = frontdoor.StreamWriter{JS: js, Subject: router.BatchSubject}
	if wrapDoorWriter != nil {
		w = wrapDoorWriter(w)
	}
	e.door = frontdoor.New(frontdoor.Config{
		Limits:     e.cfg.FrontDoor,
		Stream:     DirectStream,
		MaxPayload: e.cfg.MaxPayload,
		Read:       e.directRead(js),
		Serves: func(ft string) bool {
			_, ok := e.endpointFor(ft)
			return ok
		},
		Logger:  e.log,
		Metrics: e.reg,
	}, w)
	if e.natsDoor, err = frontdoor.ServeNATS(e.door, nc); err != nil {
		return fmt.Errorf("front door: subscribing: %w", err)
	}
	if e.cfg.IngressAddr == IngressOff {
		return nil
	}
	token := &tokenFile{path: e.keys.IngressTokenFile}
	e.httpDoor, err = frontdoor.NewHTTP(e.door, nc, frontdoor.HTTPOptions{
		InboxPrefix: FrontDoorInboxPrefix,
		Authorize:   func(r *http.Request) error { return authorizeIngress(r, token) },
	})
	if err != nil {
		return err
	}
	l, err := e.ingressListener()
	if err != nil {
		return err
	}
	e.ingressL = l
	e.ingress = &http.Server{Handler: e.httpDoor, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.ingress.Serve(l) }()
	return nil
}

// authorizeIngress lets through calls that carry the front door's token,
// or come over TLS with a client certificate its CAs verified.
func authorizeIngress(r *http.Request, token *tokenFile) error {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return errors.New("the front door needs its token: send Authorization: Bearer <token>; the token is in the runtime's data dir, " +
			"secrets/ingress.token (the runtime file twinflow.json names it)")
	}
	want, err := token.current()
	if err != nil {
		return fmt.Errorf("the front door cannot read its token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
		return errors.New("the front door refused the token: it is not this runtime's (read it again from the data dir's secrets/ingress.token; it may have been rotated)")
	}
	return nil
}

// ingressListener listens on the front door's address: the one configured,
// or by default 127.0.0.1:8080 and a free port when that one is taken.
// With a certificate it serves TLS.
func (e *Engine) ingressListener() (net.Listener, error) {
	addr := e.cfg.IngressAddr
	l, err := net.Listen("tcp", cmp.Or(addr, defaultIngressAddr))
	if err != nil && addr == "" {
		e.log.Info("default front door port taken, picking a free one", "addr", defaultIngressAddr)
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("front door address %s: %w", cmp.Or(addr, defaultIngressAddr), err)
	}
	if e.cfg.IngressTLSCertFile == "" {
		return l, nil
	}
	cfg, err := serverTLS(e.cfg.IngressTLSCertFile, e.cfg.IngressTLSKeyFile, e.cfg.IngressClientCAFile)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("front door TLS: %w", err)
	}
	return tls.NewListener(l, cfg), nil
}

// IngressURL is the base URL of the HTTP/Connect front door, "" when it is
// off.
func (e *Engine) IngressURL() string {
	if e.ingressL == nil {
		return ""
	}
	if e.cfg.IngressTLSCertFile != "" {
		return "https://" + e.ingressL.Addr().String()
	}
	return "http://" + e.ingressL.Addr().String()
}

// closeFrontDoor stops taking messages at the front door and lets the
// writes in flight finish and be answered, for up to ctx.
func (e *Engine) closeFrontDoor(ctx context.Context) {
	if e.natsDoor != nil {
		e.natsDoor.Close()
	}
	if e.door != nil {
		if err := e.door.Close(ctx); err != nil {
			e.log.Warn("stopping the front door", "err", err)
		}
	}
}

// shutdownFrontDoor closes everything of the front door.
func (e *Engine) shutdownFrontDoor() {
	if e.ingress != nil {
		// Calls waiting for their replies end with their connections.
		_ = e.ingress.Close()
	}
	if e.doorNC != nil {
		// Writes in flight fail at once.
		e.doorNC.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	e.closeFrontDoor(ctx)
	cancel()
	if e.httpDoor != nil {
		e.httpDoor.Close()
	}
}
