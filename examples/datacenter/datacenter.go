package datacenter

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
)

// UnhealthyRacksExpiry is how long the data-center twin keeps its view of
// unhealthy racks after the last change. Racks report every change and
// every recovery, so the view is normally exact; the expiry is the safety
// net for a recovery that never arrives (a rack twin that was wiped), after
// which the view starts afresh.
const UnhealthyRacksExpiry = time.Hour

// UnhealthyRacksState maps each unhealthy rack to the latest alert it
// reported. It expires an hour after its last write.
var UnhealthyRacksState = sdk.ValueSpec[map[string]RackAlertRecord]{
	Name:        "unhealthyRacks",
	Type:        sdk.JSONType[map[string]RackAlertRecord]("datacenter/UnhealthyRacks"),
	ExpiryMode:  sdk.ExpireAfterWrite,
	ExpireAfter: UnhealthyRacksExpiry,
}

// errNoReplyTo explains how to ask the data-center twin a question.
var errNoReplyTo = errors.New("GetUnhealthyRacks needs a reply subject: send it as a request " +
	"(twinflow request datacenter/datacenter ID --typename proto/datacenter.v1.GetUnhealthyRacks --data '') " +
	"or from a function, which gets UnhealthyRacks back")

// dataCenterFun is the twin of the data center: it keeps the latest alert
// of each unhealthy rack and answers who is unhealthy.
type dataCenterFun struct{}

// Invoke dispatches on the message type.
func (f *dataCenterFun) Invoke(ctx sdk.Context, msg sdk.Message) error {
	switch msg.Typename() {
	case RackAlertType.Typename():
		a, err := sdk.As(msg, RackAlertType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.rackAlert(ctx, a)
	case RackOkType.Typename():
		ok, err := sdk.As(msg, RackOkType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.rackOk(ctx, ok)
	case GetUnhealthyRacksType.Typename():
		return f.unhealthyRacks(ctx, msg)
	}
	return sdk.Terminal(fmt.Errorf("%s does not handle messages of type %s", DataCenterFunction, msg.Typename()))
}

func (f *dataCenterFun) rackAlert(ctx sdk.Context, a *datacenterv1.RackAlert) error {
	if a.GetRackId() == "" {
		return sdk.Terminal(errors.New("rack alert names no rack"))
	}
	racks, _, err := UnhealthyRacksState.Get(ctx)
	if err != nil {
		return err
	}
	if racks == nil {
		racks = make(map[string]RackAlertRecord)
	}
	racks[a.GetRackId()] = RackAlertRecordOf(a)
	return UnhealthyRacksState.Set(ctx, racks)
}

func (f *dataCenterFun) rackOk(ctx sdk.Context, ok *datacenterv1.RackOk) error {
	racks, _, err := UnhealthyRacksState.Get(ctx)
	if err != nil {
		return err
	}
	if _, unhealthy := racks[ok.GetRackId()]; !unhealthy {
		return nil
	}
	delete(racks, ok.GetRackId())
	if len(racks) == 0 {
		UnhealthyRacksState.Clear(ctx)
		return nil
	}
	return UnhealthyRacksState.Set(ctx, racks)
}

// unhealthyRacks answers a request, or a function that asked, with the
// unhealthy racks sorted by id.
func (f *dataCenterFun) unhealthyRacks(ctx sdk.Context, msg sdk.Message) error {
	if _, err := sdk.As(msg, GetUnhealthyRacksType); err != nil {
		return sdk.Terminal(err)
	}
	racks, _, err := UnhealthyRacksState.Get(ctx)
	if err != nil {
		return err
	}
	answer := &datacenterv1.UnhealthyRacks{}
	for _, id := range slices.Sorted(maps.Keys(racks)) {
		answer.Racks = append(answer.Racks, racks[id].Proto())
	}
	if msg.ReplyTo() != "" {
		return sdk.Reply(ctx, UnhealthyRacksType, answer)
	}
	if caller, ok := ctx.Caller(); ok {
		return sdk.Send(ctx, caller, UnhealthyRacksType, answer)
	}
	return sdk.Terminal(errNoReplyTo)
}
