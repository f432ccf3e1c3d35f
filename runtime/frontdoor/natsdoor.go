package frontdoor

import (
	"errors"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/router"
)

// QueueGroup is the queue group of the NATS door's subscriptions: with
// several runtimes on one NATS, each request goes to one of them.
const QueueGroup = "twinflow-frontdoor"

// NATSDoor answers core NATS requests to the front door:
//
//   - twinflow.send.<namespace>.<name>.<id>: a one-way message, answered
//     once durable with {"stream":"...","seq":N} (JetStream's acknowledgement
//     format) and the Twinflow-Idempotency-Key header;
//   - twinflow.call.<namespace>.<name>.<id>: a request, answered by the
//     function on the request's reply inbox.
//
// The typename is in the Twinflow-Typename header, the idempotency key in
// Nats-Msg-Id or Twinflow-Idempotency-Key (generated when absent). A
// refused message, or one whose write failed, is answered with no payload
// and the Twinflow-Error and Twinflow-Error-Reason headers.
type NATSDoor struct {
	d    *Door
	nc   *nats.Conn
	subs []*nats.Subscription
	ok   [2]prometheus.Counter // answers of send and call that went through
}

// ServeNATS subscribes the door to the front door subjects on nc.
func ServeNATS(d *Door, nc *nats.Conn) (*NATSDoor, error) {
	n := &NATSDoor{d: d, nc: nc}
	n.ok[0] = d.m.requests.WithLabelValues("nats", "send", codeName(0))
	n.ok[1] = d.m.requests.WithLabelValues("nats", "call", codeName(0))
	for _, s := range router.FrontDoorSubjects {
		sub, err := nc.QueueSubscribe(s, QueueGroup, n.handle)
		if err != nil {
			n.Close()
			return nil, err
		}
		// The door answers quickly and never blocks: what is pending is
		// bounded by the door's queue, not by the subscription.
		_ = sub.SetPendingLimits(-1, -1)
		n.subs = append(n.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close unsubscribes. Requests already taken are still answered.
func (n *NATSDoor) Close() {
	for _, s := range n.subs {
		_ = s.Unsubscribe()
	}
}

func (n *NATSDoor) handle(msg *nats.Msg) {
	call := strings.HasPrefix(msg.Subject, router.CallSubjectPrefix)
	kind, prefix := "send", router.SendSubjectPrefix
	if call {
		kind, prefix = "call", router.CallSubjectPrefix
	}
	m := Message{Typename: msg.Header.Get(router.TypenameHeader), Payload: msg.Data, Key: msg.Header.Get("Nats-Msg-Id")}
	if m.Key == "" {
		m.Key = msg.Header.Get(router.IdempotencyKeyHeader)
	}
	addr, rerr := router.SubjectAddress(prefix, msg.Subject)
	if rerr != nil {
		n.answer(msg.Reply, kind, m.Key, Result{Err: refuse(connect.CodeInvalidArgument, rerr.Reason, "%s", rerr.Detail)})
		return
	}
	m.Target = addr
	if m.Typename == "" {
		n.answer(msg.Reply, kind, m.Key, Result{Err: refuse(connect.CodeInvalidArgument, router.ReasonMissingTypename,
			"header %s missing; it names the message's typename", router.TypenameHeader)})
		return
	}
	if call {
		if msg.Reply == "" {
			// Nobody to answer; a call without a reply subject is a
			// mistake, never a message.
			n.d.m.requests.WithLabelValues("nats", kind, codeName(connect.CodeInvalidArgument)).Inc()
			return
		}
		m.ReplyTo = msg.Reply
	}
	reply := msg.Reply
	if err := n.d.Submit(m, func(r Result) {
		if call && r.Err == nil {
			n.ok[1].Inc() // the function answers
			return
		}
		n.answer(reply, kind, r.Key, r)
	}); err != nil {
		n.answer(reply, kind, m.Key, Result{Key: m.Key, Err: err})
	}
}

// answer publishes r on reply.
func (n *NATSDoor) answer(reply, kind, key string, r Result) {
	if r.Err != nil {
		n.d.m.requests.WithLabelValues("nats", kind, codeName(r.Err.Code)).Inc()
	} else {
		n.ok[0].Inc()
	}
	if reply == "" {
		return
	}
	out := &nats.Msg{Subject: reply, Header: nats.Header{}}
	if key != "" {
		out.Header[router.IdempotencyKeyHeader] = []string{key}
	}
	if r.Err != nil {
		out.Header[router.ErrorHeader] = []string{router.ErrorText(r.Err.Detail)}
		out.Header[router.ErrorReasonHeader] = []string{string(r.Err.Reason)}
	} else {
		b := make([]byte, 0, 48+len(r.Stream))
		b = append(b, `{"stream":`...)
		b = strconv.AppendQuote(b, r.Stream)
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
		out.Data = append(b, '}')
	}
	if err := n.nc.PublishMsg(out); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		n.d.log.Debug("answering a front door request failed", "reply", reply, "err", err)
	}
}

// codeName names a Connect code for metrics; 0 is "ok".
func codeName(c connect.Code) string {
	if c == 0 {
		return "ok"
	}
	return c.String()
}
