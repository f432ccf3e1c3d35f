package runtime

// Queries in cluster mode: a worker asked for the state of an address whose
// key group another worker owns forwards the query to that worker over
// NATS, on the owner's query subject, and a listing of addresses asks every
// worker for its page and merges them; with the workers' own NATS identity:
// the admin API of each worker keeps its own token, and the caller needs
// only the one of the worker it reaches.

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// serveQueries answers the queries other workers forward to this one:
// states of addresses of its key groups, and pages of its addresses.
func (cm *clusterMode) serveQueries() error {
	_, err := cm.e.nc.Subscribe(cm.querySubject(cm.worker), func(m *nats.Msg) {
		var req twinflowv1.GetStateRequest
		var resp *twinflowv1.GetStateResponse
		err := proto.Unmarshal(m.Data, &req)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			resp, err = cm.e.localState(ctx, &req)
			cancel()
		}
		answerQuery(m, resp, err)
	})
	if err != nil {
		return err
	}
	_, err = cm.e.nc.Subscribe(cm.listSubject(cm.worker), func(m *nats.Msg) {
		var req twinflowv1.ListAddressesRequest
		var resp *twinflowv1.ListAddressesResponse
		err := proto.Unmarshal(m.Data, &req)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			resp, err = cm.e.listLocal(ctx, &req)
			cancel()
		}
		answerQuery(m, resp, err)
	})
	return err
}

// answerQuery answers a forwarded query with resp, or with err in headers.
func answerQuery(m *nats.Msg, resp proto.Message, err error) {
	reply := nats.NewMsg(m.Reply)
	if err == nil {
		reply.Data, err = proto.Marshal(resp)
	}
	if err != nil {
		reply.Header.Set(hdrQueryError, err.Error())
		reply.Header.Set(hdrQueryCode, connect.CodeOf(err).String())
		reply.Data = nil
	}
	_ = m.RespondMsg(reply)
}

// ask sends a query to a worker and decodes its answer into resp.
func (cm *clusterMode) ask(ctx context.Context, worker, subject string, req, resp proto.Message) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	m, err := cm.e.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			err = fmt.Errorf("worker %s does not answer (it may have stopped; its key groups move to the others): %w", worker, err)
		}
		return connect.NewError(connect.CodeUnavailable, err)
	}
	if msg := m.Header.Get(hdrQueryError); msg != "" {
		code := connect.CodeUnavailable
		_ = code.UnmarshalText([]byte(m.Header.Get(hdrQueryCode)))
		return connect.NewError(code, fmt.Errorf("worker %s: %s", worker, msg))
	}
	if err := proto.Unmarshal(m.Data, resp); err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("answer of worker %s: %w", worker, err))
	}
	return nil
}

func (cm *clusterMode) listSubject(worker string) string {
	return "twinflow.cluster." + cm.c.Name() + ".list." + worker
}

// listEverywhere lists a page of the addresses of a function type across
// the cluster: this worker's page merged with every other member's. An
// address whose key group is between owners at that moment is missing
// from the page.
func (cm *clusterMode) listEverywhere(ctx context.Context, req *twinflowv1.ListAddressesRequest) (*twinflowv1.ListAddressesResponse, error) {
	local, err := cm.e.listLocal(ctx, req) // checks the request
	if err != nil {
		return nil, err
	}
	limit, _ := listLimit(req.GetLimit())
	pages := []*twinflowv1.ListAddressesResponse{local}
	mem := cm.membership()
	if mem == nil {
		return local, nil
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for worker := range mem.Table().Members {
		if worker == cm.worker {
			continue
		}
		wg.Go(func() {
			var page twinflowv1.ListAddressesResponse
			err := cm.ask(ctx, worker, cm.listSubject(worker), req, &page)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			pages = append(pages, &page)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("listing %s across the cluster: %w", req.GetType(), err))
	}
	return mergePages(pages, limit), nil
}

// forwardGetState reads an address's state at the worker that owns its key
// group.
func (cm *clusterMode) forwardGetState(ctx context.Context, kg int, req *twinflowv1.GetStateRequest) (*twinflowv1.GetStateResponse, error) {
	mem := cm.membership()
	if mem == nil {
		return nil, connect.NewError(connect.CodeUnavailable, cm.notOwned(kg))
	}
	l := mem.Table().Lease(kg)
	if l.Holder.IsZero() || l.Holder.Worker == cm.worker {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("key group %d is moving between workers: ask again shortly", kg))
	}
	var resp twinflowv1.GetStateResponse
	if err := cm.ask(ctx, l.Holder.Worker, cm.querySubject(l.Holder.Worker), req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
