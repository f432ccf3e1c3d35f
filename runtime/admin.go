package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

// adminService serves the admin/query API.
type adminService struct {
	e *Engine
}

// GetState reads an address's state on the loop of the shard that owns it,
// so the answer includes writes not yet checkpointed. In cluster mode an
// address of a key group another worker owns is read there (forwarded
// over NATS).
func (a *adminService) GetState(ctx context.Context, req *connect.Request[twinflowv1.GetStateRequest]) (*connect.Response[twinflowv1.GetStateResponse], error) {
	addr := req.Msg.GetAddress()
	if addr.GetType() == "" || addr.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("address needs a type and an id"))
	}
	e := a.e
	var resp *twinflowv1.GetStateResponse
	var err error
	if kg := keygroup.Of(addr.GetId(), e.cfg.KeyGroups); e.cl != nil && e.cl.ownedKG(kg) == nil {
		resp, err = e.cl.forwardGetState(ctx, kg, req.Msg)
	} else {
		resp, err = e.localState(ctx, req.Msg)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// localState reads an address's state in this process.
func (e *Engine) localState(ctx context.Context, req *twinflowv1.GetStateRequest) (*twinflowv1.GetStateResponse, error) {
	addr := req.GetAddress()
	kg := keygroup.Of(addr.GetId(), e.cfg.KeyGroups)
	s := keygroup.ShardOf(kg, e.cfg.KeyGroups, e.cfg.Shards)
	pl := e.pl()
	if e.cl != nil && e.cl.ownedKG(kg) == nil {
		return nil, connect.NewError(connect.CodeUnavailable, e.cl.notOwned(kg))
	}
	var vals map[string]state.Value
	var rerr error
	err := pl.loops[s].Do(ctx, func(c *shard.Core) {
		vals, rerr = c.GetState(shard.Address{Type: addr.GetType(), ID: addr.GetId()})
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("reading state of %s/%s: %w", addr.GetType(), addr.GetId(), err))
	}
	return &twinflowv1.GetStateResponse{Address: addr, Values: stateEntries(e.json, vals, req.GetNames())}, nil
}

// ListFunctionTypes lists the function types the runtime knows.
func (a *adminService) ListFunctionTypes(context.Context, *connect.Request[twinflowv1.ListFunctionTypesRequest]) (*connect.Response[twinflowv1.ListFunctionTypesResponse], error) {
	// The types with registered state, and those invoked since the start
	// (stateless ones have no specs).
	all := a.e.specs.All()
	names := a.e.currentEndpoints().seen()
	for t := range all {
		names = append(names, t)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	resp := &twinflowv1.ListFunctionTypesResponse{DescriptorSet: a.e.types.DescriptorSet()}
	for _, t := range names {
		info := &twinflowv1.FunctionTypeInfo{Type: t, StateSpecs: all[t], HandledTypenames: a.e.handled.of(t)}
		if ep, ok := a.e.cfg.Module.EndpointFor(t); ok {
			info.EndpointUrl = ep.URL
		}
		resp.FunctionTypes = append(resp.FunctionTypes, info)
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) GetCheckpointStatus(context.Context, *connect.Request[twinflowv1.GetCheckpointStatusRequest]) (*connect.Response[twinflowv1.GetCheckpointStatusResponse], error) {
	last, inProgress := a.e.pl().coord.Latest()
	return connect.NewResponse(&twinflowv1.GetCheckpointStatusResponse{Latest: checkpointInfo(last), InProgressId: inProgress}), nil
}

func (a *adminService) ListCheckpoints(context.Context, *connect.Request[twinflowv1.ListCheckpointsRequest]) (*connect.Response[twinflowv1.ListCheckpointsResponse], error) {
	mans, err := a.e.store.Manifests()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	resp := &twinflowv1.ListCheckpointsResponse{}
	for i := len(mans) - 1; i >= 0; i-- {
		resp.Checkpoints = append(resp.Checkpoints, checkpointInfo(mans[i]))
	}
	return connect.NewResponse(resp), nil
}

func (a *adminService) TriggerCheckpoint(ctx context.Context, _ *connect.Request[twinflowv1.TriggerCheckpointRequest]) (*connect.Response[twinflowv1.TriggerCheckpointResponse], error) {
	man, err := a.e.Checkpoint(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&twinflowv1.TriggerCheckpointResponse{Checkpoint: checkpointInfo(man)}), nil
}

// Stop answers once the final checkpoint is durable; the engine then closes.
// A savepoint goes only under the configured savepoint dir.
func (a *adminService) Stop(ctx context.Context, req *connect.Request[twinflowv1.StopRequest]) (*connect.Response[twinflowv1.StopResponse], error) {
	dir, err := a.e.savepointPath(req.Msg.GetSavepointDir())
	if err != nil {
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	}
	man, err := a.e.finish(ctx, dir)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	go a.e.shutdown()
	info := checkpointInfo(man)
	info.SavepointDir = dir
	return connect.NewResponse(&twinflowv1.StopResponse{Checkpoint: info}), nil
}

func checkpointInfo(m *storagev1.Manifest) *twinflowv1.CheckpointInfo {
	if m == nil {
		return nil
	}
	return &twinflowv1.CheckpointInfo{
		Id:                    m.GetId(),
		CompletedAtUnixMillis: m.GetCompletedAtUnixMillis(),
		DurationMillis:        m.GetDurationMillis(),
		Bytes:                 m.GetBytes(),
		PauseMillis:           m.GetPauseMillis(),
	}
}
