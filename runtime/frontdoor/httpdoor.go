package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
)

// IdempotencyKeyHeader is the HTTP header of a message's idempotency key,
// in requests and in answers.
const IdempotencyKeyHeader = "Idempotency-Key"

// TimeoutHeader bounds how long a call waits for its reply: a Go duration
// such as "5s".
const TimeoutHeader = "Twinflow-Timeout"

// HTTPOptions configure an HTTPDoor. Zero values take the defaults.
type HTTPOptions struct {
	// InboxPrefix is the prefix of the inboxes call replies come to: one
	// only the runtime may read. Required.
	InboxPrefix string
	// Authorize checks a request's credentials before anything else; nil
	// lets every request in.
	Authorize func(*http.Request) error
	// MaxBodyBytes bounds a request body; default the door's MaxPayload
	// plus 64 KiB.
	MaxBodyBytes int64
	// CallTimeout is how long a call waits for its reply unless the client
	// says otherwise; default 30s. MaxCallTimeout is the longest it may
	// ask for; default 5m.
	CallTimeout, MaxCallTimeout time.Duration
}

// HTTPDoor serves the front door over HTTP, to clients without NATS:
//
//   - POST /send/{namespace}/{name}/{id}: a one-way message, answered 202
//     once durable with {"stream","sequence","idempotencyKey"};
//   - POST /call/{namespace}/{name}/{id}: a request, answered 200 with the
//     function's reply;
//   - twinflow.v1.IngressService (Send, Call) over Connect, gRPC and
//     gRPC-Web, on the same listener.
//
// The body is the message: JSON (application/json, typename twinflow/json
// unless the Twinflow-Typename header names another), protobuf
// (application/protobuf with Twinflow-Typename, or a messageType parameter),
// raw bytes (application/octet-stream, twinflow/bytes) or text (text/plain,
// sent as a twinflow/string). The Idempotency-Key header is the message's
// key. Errors map to HTTP statuses and Connect codes: 400 invalid_argument,
// 401 unauthenticated, 404 not_found (no endpoint serves the type), 409
// already_exists (a call repeated with the key of one its target already
// received), 413 resource_exhausted (a body over the limit), 415 (a body of
// an unknown type), 503 unavailable with Retry-After (intake paused, the
// runtime stopping, a failed write), 504 deadline_exceeded (no reply in
// time).
type HTTPDoor struct {
	d       *Door
	opts    HTTPOptions
	replies *Replies
	mux     *http.ServeMux
	errw    *connect.ErrorWriter
	// connectPath starts the paths of the Connect service: a plain POST of
	// JSON elsewhere would look like a Connect call to errw.
	connectPath string
}

// NewHTTP returns the HTTP/Connect door of d; call replies come on nc.
func NewHTTP(d *Door, nc *nats.Conn, opts HTTPOptions) (*HTTPDoor, error) {
	if opts.InboxPrefix == "" {
		return nil, errors.New("frontdoor: HTTPOptions.InboxPrefix is required")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = int64(d.cfg.MaxPayload) + 64<<10
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.MaxCallTimeout <= 0 {
		opts.MaxCallTimeout = 5 * time.Minute
	}
	r, err := NewReplies(nc, opts.InboxPrefix)
	if err != nil {
		return nil, fmt.Errorf("frontdoor: reply inbox: %w", err)
	}
	h := &HTTPDoor{d: d, opts: opts, replies: r, mux: http.NewServeMux(), errw: connect.NewErrorWriter()}
	h.connectPath = "/" + twinflowv1connect.IngressServiceName + "/"
	h.mux.HandleFunc("POST /send/{ns}/{name}/{id...}", func(w http.ResponseWriter, r *http.Request) { h.plain(w, r, false) })
	h.mux.HandleFunc("POST /call/{ns}/{name}/{id...}", func(w http.ResponseWriter, r *http.Request) { h.plain(w, r, true) })
	path, ch := twinflowv1connect.NewIngressServiceHandler(connectService{h}, connect.WithReadMaxBytes(int(opts.MaxBodyBytes)))
	h.mux.Handle(path, ch)
	return h, nil
}

// Close stops waiting for replies.
func (h *HTTPDoor) Close() { h.replies.Close() }

// ServeHTTP bounds the body, authenticates, and serves.
func (h *HTTPDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > h.opts.MaxBodyBytes {
		h.fail(w, r, "", refuse(connect.CodeResourceExhausted, router.ReasonOversized,
			"request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, h.opts.MaxBodyBytes))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	if h.opts.Authorize != nil {
		if err := h.opts.Authorize(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="twinflow-ingress"`)
			h.fail(w, r, "", &Error{Code: connect.CodeUnauthenticated, Detail: err.Error()})
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// send submits m and waits for its write.
func (h *HTTPDoor) send(ctx context.Context, m Message) (Result, *Error) {
	ch := make(chan Result, 1)
	if err := h.d.Submit(m, func(r Result) { ch <- r }); err != nil {
		return Result{Key: m.Key}, err
	}
	select {
	case r := <-ch:
		return r, r.Err
	case <-ctx.Done():
		// The write goes on; the client that left learns nothing.
		return Result{Key: m.Key}, refuse(connect.CodeCanceled, router.ReasonUnavailable, "the client went away before the message was durable")
	}
}

// call sends m as a request and waits for the reply, for up to timeout.
func (h *HTTPDoor) call(ctx context.Context, m Message, timeout time.Duration) (*nats.Msg, Result, *Error) {
	inbox, answer, done := h.replies.Open()
	defer done()
	m.ReplyTo = inbox
	res, err := h.send(ctx, m)
	if err != nil {
		return nil, res, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case reply := <-answer:
		return reply, res, replyError(reply)
	case <-t.C:
		return nil, res, refuse(connect.CodeDeadlineExceeded, router.ReasonTimeout,
			"no reply within %s; the request is stored and will be processed (a repeat with the same idempotency key is dropped)", timeout)
	case <-ctx.Done():
		return nil, res, refuse(connect.CodeCanceled, router.ReasonTimeout, "the client went away before the reply")
	}
}

// replyError is the error an answer carries in its headers, nil for a
// reply of the function.
func replyError(m *nats.Msg) *Error {
	text := m.Header.Get(router.ErrorHeader)
	if text == "" {
		return nil
	}
	reason := router.Reason(m.Header.Get(router.ErrorReasonHeader))
	switch reason {
	case router.ReasonDuplicate:
		return refuse(connect.CodeAlreadyExists, reason, "%s", text)
	case router.ReasonOversized:
		return refuse(connect.CodeResourceExhausted, reason, "%s", text)
	case "":
		// The function failed for good (or broke the protocol): its batch
		// was dead-lettered.
		return refuse(connect.CodeInternal, router.ReasonFunctionFailed, "the function failed: %s", text)
	}
	return refuse(connect.CodeInvalidArgument, reason, "%s", text)
}

// timeout is a call's wait: the client's, within bounds.
func (h *HTTPDoor) timeout(asked time.Duration) time.Duration {
	if asked <= 0 {
		return h.opts.CallTimeout
	}
	return min(asked, h.opts.MaxCallTimeout)
}

// plain serves POST /send/... and /call/....
func (h *HTTPDoor) plain(w http.ResponseWriter, r *http.Request, call bool) {
	kind := "send"
	if call {
		kind = "call"
	}
	m := Message{Target: router.Address{Type: r.PathValue("ns") + "/" + r.PathValue("name"), ID: r.PathValue("id")},
		Key: r.Header.Get(IdempotencyKeyHeader)}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.fail(w, r, kind, refuse(connect.CodeResourceExhausted, router.ReasonOversized, "request body exceeds the limit of %d bytes", tooLarge.Limit))
			return
		}
		h.fail(w, r, kind, refuse(connect.CodeInvalidArgument, "bad_body", "reading the request body: %v", err))
		return
	}
	var berr *Error
	if m.Typename, m.Payload, berr = decodeBody(r.Header, body); berr != nil {
		h.fail(w, r, kind, berr)
		return
	}
	if !call {
		res, err := h.send(r.Context(), m)
		if err != nil {
			h.failKey(w, r, kind, res.Key, err)
			return
		}
		h.count("http", kind, 0)
		w.Header().Set(IdempotencyKeyHeader, res.Key)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(struct {
			Stream         string `json:"stream"`
			Sequence       uint64 `json:"sequence"`
			IdempotencyKey string `json:"idempotencyKey"`
		}{res.Stream, res.Seq, res.Key})
		return
	}
	var asked time.Duration
	if v := r.Header.Get(TimeoutHeader); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			h.fail(w, r, kind, refuse(connect.CodeInvalidArgument, "bad_timeout", "header %s: %q is not a positive duration such as 5s", TimeoutHeader, v))
			return
		}
		asked = d
	}
	reply, res, cerr := h.call(r.Context(), m, h.timeout(asked))
	if cerr != nil {
		h.failKey(w, r, kind, res.Key, cerr)
		return
	}
	h.count("http", kind, 0)
	typename := reply.Header.Get(router.TypenameHeader)
	w.Header().Set(IdempotencyKeyHeader, res.Key)
	w.Header().Set(router.TypenameHeader, typename)
	w.Header().Set("Content-Type", contentType(typename, reply.Data))
	_, _ = w.Write(reply.Data)
}

// decodeBody returns the typename and payload of a plain request's body.
func decodeBody(h http.Header, body []byte) (string, []byte, *Error) {
	typename := h.Get(router.TypenameHeader)
	ct := h.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct != "" && err != nil {
		return "", nil, refuse(connect.CodeInvalidArgument, "bad_content_type", "Content-Type %q: %v", ct, err)
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		if !json.Valid(body) {
			return "", nil, refuse(connect.CodeInvalidArgument, router.ReasonBadJSON, "the body is not a JSON document (Content-Type %s)", mt)
		}
		if typename == "" {
			typename = "twinflow/json"
		}
	case mt == "application/protobuf" || mt == "application/x-protobuf" || mt == "application/vnd.google.protobuf":
		if typename == "" {
			name := params["messagetype"]
			if name == "" {
				name = params["proto"]
			}
			if name == "" {
				return "", nil, refuse(connect.CodeInvalidArgument, router.ReasonMissingTypename,
					"a protobuf body needs its typename: send the header %s: proto/<full message name>, or Content-Type: %s; messageType=<full message name>", router.TypenameHeader, mt)
			}
			typename = "proto/" + name
		}
	case mt == "application/octet-stream":
		if typename == "" {
			typename = "twinflow/bytes"
		}
	case mt == "text/plain" && typename == "":
		if !utf8.Valid(body) {
			return "", nil, refuse(connect.CodeInvalidArgument, "bad_body", "a text/plain body must be UTF-8")
		}
		// A twinflow/string is a JSON string.
		body, _ = json.Marshal(string(body))
		typename = "twinflow/string"
	case typename == "":
		return "", nil, &Error{Code: connect.CodeInvalidArgument, Reason: "unsupported_media_type", Detail: fmt.Sprintf(
			"a body of Content-Type %q needs its typename in the header %s; or send application/json, application/protobuf, application/octet-stream or text/plain", ct, router.TypenameHeader)}
	}
	if err := router.ValidateTypename(typename); err != nil {
		return "", nil, refuse(connect.CodeInvalidArgument, router.ReasonBadTypename, "%v", err)
	}
	return typename, body, nil
}

// contentType is the Content-Type of a reply of typename.
func contentType(typename string, data []byte) string {
	switch {
	case strings.HasPrefix(typename, "proto/"):
		return "application/protobuf"
	case typename == "twinflow/bytes":
		return "application/octet-stream"
	case json.Valid(data):
		return "application/json"
	}
	return "application/octet-stream"
}

// statuses are the HTTP statuses of the codes, as Connect maps them; 415
// and 413 for the bodies plain HTTP refuses.
var statuses = map[connect.Code]int{
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeUnauthenticated:    http.StatusUnauthorized,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeAlreadyExists:      http.StatusConflict,
	connect.CodeResourceExhausted:  http.StatusRequestEntityTooLarge,
	connect.CodeUnavailable:        http.StatusServiceUnavailable,
	connect.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
	connect.CodeCanceled:           499,
	connect.CodeInternal:           http.StatusInternalServerError,
	connect.CodeFailedPrecondition: http.StatusPreconditionFailed,
}

func (h *HTTPDoor) failKey(w http.ResponseWriter, r *http.Request, kind, key string, err *Error) {
	if key != "" {
		w.Header().Set(IdempotencyKeyHeader, key)
	}
	h.fail(w, r, kind, err)
}

// fail answers err: as a Connect error to Connect, gRPC and gRPC-Web
// clients, as JSON in Connect's error format to others.
func (h *HTTPDoor) fail(w http.ResponseWriter, r *http.Request, kind string, err *Error) {
	door := "http"
	if strings.HasPrefix(r.URL.Path, h.connectPath) && h.errw.IsSupported(r) {
		door = "connect"
	}
	h.count(door, kind, err.Code)
	if err.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((err.RetryAfter+time.Second-1)/time.Second)))
	}
	if door == "connect" {
		_ = h.errw.Write(w, r, toConnect(err))
		return
	}
	status, ok := statuses[err.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if err.Reason == "unsupported_media_type" {
		status = http.StatusUnsupportedMediaType
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    string `json:"code"`
		Reason  string `json:"reason,omitempty"`
		Message string `json:"message"`
	}{err.Code.String(), string(err.Reason), err.Detail})
}

func (h *HTTPDoor) count(door, kind string, code connect.Code) {
	if kind != "" {
		h.d.m.requests.WithLabelValues(door, kind, codeName(code)).Inc()
	}
}

// toConnect turns err into a Connect error, with its reason and
// Retry-After in the error's metadata.
func toConnect(err *Error) *connect.Error {
	ce := connect.NewError(err.Code, errors.New(err.Detail))
	if err.Reason != "" {
		ce.Meta().Set(router.ErrorReasonHeader, string(err.Reason))
	}
	if err.RetryAfter > 0 {
		ce.Meta().Set("Retry-After", strconv.Itoa(int((err.RetryAfter+time.Second-1)/time.Second)))
	}
	return ce
}

// connectService is twinflow.v1.IngressService.
type connectService struct{ h *HTTPDoor }

func message(target *twinflowv1.Address, arg *twinflowv1.TypedValue, key string) Message {
	return Message{Target: router.Address{Type: target.GetType(), ID: target.GetId()},
		Typename: arg.GetTypename(), Payload: arg.GetValue(), Key: key}
}

func (s connectService) Send(ctx context.Context, req *connect.Request[twinflowv1.SendRequest]) (*connect.Response[twinflowv1.SendResponse], error) {
	res, err := s.h.send(ctx, message(req.Msg.GetTarget(), req.Msg.GetArgument(), req.Msg.GetIdempotencyKey()))
	if err != nil {
		s.h.count("connect", "send", err.Code)
		return nil, toConnect(err)
	}
	s.h.count("connect", "send", 0)
	return connect.NewResponse(&twinflowv1.SendResponse{Stream: res.Stream, Sequence: res.Seq, IdempotencyKey: res.Key}), nil
}

func (s connectService) Call(ctx context.Context, req *connect.Request[twinflowv1.CallRequest]) (*connect.Response[twinflowv1.CallResponse], error) {
	timeout := s.h.timeout(time.Duration(req.Msg.GetTimeoutMillis()) * time.Millisecond)
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	reply, res, err := s.h.call(ctx, message(req.Msg.GetTarget(), req.Msg.GetArgument(), req.Msg.GetIdempotencyKey()), timeout)
	if err != nil {
		s.h.count("connect", "call", err.Code)
		return nil, toConnect(err)
	}
	s.h.count("connect", "call", 0)
	return connect.NewResponse(&twinflowv1.CallResponse{
		Result:         &twinflowv1.TypedValue{Typename: reply.Header.Get(router.TypenameHeader), Value: reply.Data},
		IdempotencyKey: res.Key,
	}), nil
}
