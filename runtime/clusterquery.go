package runtime

// Queries in cluster mode: a worker asked for the state of an address whose
// key group another worker owns forwards the query to that worker over
// NATS, on the owner's query subject, with the workers' own NATS identity:
// the admin API of each worker keeps its own token, and the caller needs
// only the one of the worker it reaches.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// Headers of an answer to a forwarded query that failed.
const (
	hdrQueryError = "Twinflow-Error"
	hdrQueryCode  = "Twinflow-Error-Code"
)

// forwardTimeout bounds a forwarded query.
const forwardTimeout = 5 * time.Second

func (cm *clusterMode) querySubject(worker string) string {
	return "twinflow.cluster." + cm.c.Name() + ".query." + worker
}

// serveQueries answers the queries other workers forward to this one.
func (cm *clusterMode) serveQueries() (*nats.Subscription, error) {
	return cm.e.nc.Subscribe(cm.querySubject(cm.worker), func(m *nats.Msg) {
		reply := nats.NewMsg(m.Reply)
		var req twinflowv1.GetStateRequest
		err := proto.Unmarshal(m.Data, &req)
		var resp *twinflowv1.GetStateResponse
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			resp, err = cm.e.localState(ctx, &req)
			cancel()
		}
		if err == nil {
			reply.Data, err = proto.Marshal(resp)
		}
		if err != nil {
			reply.Header.Set(hdrQueryError, err.Error())
			reply.Header.Set(hdrQueryCode, connect.CodeOf(err).String())
			reply.Data = nil
		}
		_ = m.RespondMsg(reply)
	})
}

// forwardGetState reads an address's state at the worker that owns its key
// group.
func (cm *clusterMode) forwardGetState(ctx context.Context, kg int, req *twinflowv1.GetStateRequest) (*twinflowv1.GetStateResponse, error) {
	l := cm.membership().Table().Lease(kg)
	if l.Holder.IsZero() || l.Holder.Worker == cm.worker {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("key group %d is moving between workers: ask again shortly", kg))
	}
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	m, err := cm.e.nc.RequestWithContext(ctx, cm.querySubject(l.Holder.Worker), data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			err = fmt.Errorf("worker %s, which owns key group %d, does not answer (it may have stopped; its key groups move to the others): %w", l.Holder.Worker, kg, err)
		}
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	if msg := m.Header.Get(hdrQueryError); msg != "" {
		code := connect.CodeUnavailable
		_ = code.UnmarshalText([]byte(m.Header.Get(hdrQueryCode)))
		return nil, connect.NewError(code, fmt.Errorf("worker %s: %s", l.Holder.Worker, msg))
	}
	var resp twinflowv1.GetStateResponse
	if err := proto.Unmarshal(m.Data, &resp); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("answer of worker %s: %w", l.Holder.Worker, err))
	}
	return &resp, nil
}
