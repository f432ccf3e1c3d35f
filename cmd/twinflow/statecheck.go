package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
)

// noState explains a state get that found nothing to print, with exit
// status 3: the address has no state, the state named is not set, or no
// state of that name exists (then it lists those that do).
func noState(ctx context.Context, c twinflowv1connect.AdminServiceClient, req *twinflowv1.GetStateRequest) error {
	addr := req.GetAddress().GetType() + "/" + req.GetAddress().GetId()
	var declared []string
	var known []string
	if resp, err := c.ListFunctionTypes(ctx, connect.NewRequest(&twinflowv1.ListFunctionTypesRequest{})); err == nil {
		for _, f := range resp.Msg.GetFunctionTypes() {
			known = append(known, f.GetType())
			if f.GetType() == req.GetAddress().GetType() {
				for _, s := range f.GetStateSpecs() {
					declared = append(declared, s.GetName())
				}
			}
		}
	}
	var err error
	switch {
	case len(req.GetNames()) == 1 && len(declared) > 0 && !slices.Contains(declared, req.GetNames()[0]):
		err = fmt.Errorf("%s has no state named %q: %s declares %s", addr, req.GetNames()[0], req.GetAddress().GetType(), strings.Join(declared, ", "))
	case len(req.GetNames()) == 1:
		err = fmt.Errorf("%s has no value for the state %q: it was never set, expired or was deleted (state get %s %s shows all its state)",
			addr, req.GetNames()[0], req.GetAddress().GetType(), req.GetAddress().GetId())
	case len(known) > 0 && !slices.Contains(known, req.GetAddress().GetType()):
		err = fmt.Errorf("%s has no state: no function of type %s has state or ran on this runtime (these have: %s)", addr, req.GetAddress().GetType(), strings.Join(known, ", "))
	default:
		err = fmt.Errorf("%s has no state: no message changed it yet (one sent a moment ago may still be on its way), or its state expired or was deleted", addr)
	}
	return &exitError{code: exitNoState, err: err}
}
