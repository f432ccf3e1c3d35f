package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"connectrpc.com/connect"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

// Reading is a sensor reading, sent as JSON.
type Reading struct {
	Celsius float64 `json:"celsius"`
}

// ReadingType is how readings travel.
var ReadingType = sdk.JSONType[Reading]("example/Reading")

// maxSeen is the highest temperature a sensor reported in the last day.
var maxSeen = sdk.ValueSpec[float64]{
	Name:        "max",
	Type:        sdk.Float64Type,
	ExpiryMode:  sdk.ExpireAfterWrite,
	ExpireAfter: 24 * time.Hour,
}

// sensor keeps the maximum reading and alerts the building's twin when a
// reading exceeds it.
func sensor(ctx sdk.Context, msg sdk.Message) error {
	r, err := sdk.As(msg, ReadingType)
	if err != nil {
		return sdk.Terminal(err) // a message we cannot read will not get better
	}
	max, ok, err := maxSeen.Get(ctx)
	if err != nil {
		return err
	}
	if ok && r.Celsius <= max {
		return nil
	}
	if err := maxSeen.Set(ctx, r.Celsius); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	return sdk.Send(ctx, sdk.Address{Type: "example/building", ID: "hq"}, sdk.StringType,
		fmt.Sprintf("%s: new maximum %.1f°C", ctx.Self().ID, r.Celsius))
}

// A function with state, registered and tested with sdktest.
func Example() {
	reg := sdk.NewRegistry()
	if err := reg.Register("example/sensor", sdk.FunctionFunc(sensor), maxSeen); err != nil {
		fmt.Println(err)
		return
	}

	h := sdktest.New(reg)
	s1 := sdk.Address{Type: "example/sensor", ID: "s1"}
	for _, c := range []float64{20, 25, 22} {
		msg, err := sdk.Encode(ReadingType, Reading{Celsius: c})
		if err != nil {
			fmt.Println(err)
			return
		}
		res, err := h.Invoke(s1, msg)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, m := range res.Sent {
			alert, _ := sdk.Decode(sdk.StringType, m.Value)
			fmt.Printf("to %s: %s\n", m.To, alert)
		}
	}
	max, _, err := sdktest.StateOf(h, s1, maxSeen)
	fmt.Println("max:", max, err)

	_, err = h.Invoke(s1, sdk.TypedValue{Typename: "example/Unknown"})
	var e *sdktest.Error
	fmt.Println("terminal:", errors.As(err, &e) && e.Terminal)
	// Output:
	// to example/building/hq: s1: new maximum 25.0°C
	// max: 25 <nil>
	// terminal: true
}

// Serving functions: mount the handler and call it the way the runtime
// does, with state shipped in the request and effects in the response.
func ExampleHandler() {
	reg := sdk.NewRegistry()
	if err := reg.Register("example/sensor", sdk.FunctionFunc(sensor), maxSeen); err != nil {
		fmt.Println(err)
		return
	}
	// In production: sdk.NewServer(":8000", sdk.Handler(reg)).ListenAndServe()
	srv := httptest.NewServer(sdk.Handler(reg))
	defer srv.Close()

	reading, _ := sdk.Encode(ReadingType, Reading{Celsius: 30})
	client := twinflowv1connect.NewFunctionServiceClient(srv.Client(), srv.URL)
	resp, err := client.Invoke(context.Background(), connect.NewRequest(&twinflowv1.InvokeRequest{
		ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
		Batches: []*twinflowv1.AddressBatch{{
			Target: &twinflowv1.Address{Type: "example/sensor", Id: "s1"},
			State: []*twinflowv1.StateValue{{
				Name:  "max",
				Value: &twinflowv1.TypedValue{Typename: "twinflow/float64", Value: []byte("21.5")},
			}},
			Invocations: []*twinflowv1.Invocation{{
				Argument: &twinflowv1.TypedValue{Typename: reading.Typename, Value: reading.Bytes},
			}},
		}},
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	e := resp.Msg.GetResults()[0].GetEffects()
	for _, m := range e.GetStateMutations() {
		fmt.Printf("state %s: %s %s\n", m.GetName(), m.GetKind(), m.GetValue().GetValue())
	}
	for _, m := range e.GetOutgoing() {
		fmt.Printf("to %s/%s: %s\n", m.GetTarget().GetType(), m.GetTarget().GetId(), m.GetArgument().GetValue())
	}
	// Output:
	// state max: KIND_SET 30
	// to example/building/hq: "s1: new maximum 30.0°C"
}

// A terminal error is dead-lettered; any other error is retried.
func ExampleTerminal() {
	parse := func(msg sdk.Message) (Reading, error) {
		r, err := sdk.As(msg, ReadingType)
		if err != nil {
			return r, sdk.Terminal(fmt.Errorf("unreadable reading: %w", err))
		}
		return r, nil
	}
	_, err := parse(fakeMessage{typename: "example/Other"})
	fmt.Println(sdk.IsTerminal(err), err)
	// Output:
	// true unreadable reading: message: value has typename "example/Other", want "example/Reading"
}

type fakeMessage struct{ typename string }

func (m fakeMessage) Typename() string        { return m.typename }
func (m fakeMessage) Bytes() []byte           { return nil }
func (m fakeMessage) Is(typename string) bool { return typename == m.typename }
func (m fakeMessage) ReplyTo() string         { return "" }
