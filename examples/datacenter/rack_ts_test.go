package datacenter_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/internal/tsendpoint"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/sdk"
)

// tsRackScript is the TypeScript rack twin's endpoint, built by `make ts`.
const tsRackScript = "examples/datacenter/ts/dist/src/main.js"

// TestTypeScriptRackMatchesGo sends the same random stream of rack
// messages, in batches, to the Go rack twin and to the TypeScript one, each
// with the state it wrote itself, and checks that every answer is the
// same, byte for byte: state, messages, delayed messages, egress, errors.
func TestTypeScriptRackMatchesGo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration // the Go config's CorrelationDelay
		env   string        // the same for the TypeScript endpoint
	}{
		{"with a correlation delay", 0, "DATACENTER_CORRELATION_DELAY=2s"},
		{"correlating at once", -1, "DATACENTER_CORRELATION_DELAY=-1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := sdk.NewRegistry()
			if err := datacenter.Register(reg, datacenter.Config{CorrelationDelay: tc.delay}); err != nil {
				t.Fatal(err)
			}
			goSrv := httptest.NewServer(sdk.Handler(reg))
			t.Cleanup(goSrv.Close)
			tsURL := tsendpoint.Start(t, "../..", tsRackScript, "--listen", tc.env)
			goRack, tsRack := newRackClient(t, goSrv.URL), newRackClient(t, tsURL)

			seed := uint64(time.Now().UnixNano())
			rng := rand.New(rand.NewPCG(seed, 7))
			t.Logf("seed %d", seed)
			at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			for step := range 300 {
				rack := fmt.Sprintf("rack-%d", rng.IntN(2))
				var invs []*twinflowv1.Invocation
				for range 1 + rng.IntN(3) {
					at = at.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
					invs = append(invs, &twinflowv1.Invocation{Argument: randomRackMessage(t, rng, rack, at)})
				}
				g, ts := goRack.invoke(t, rack, invs), tsRack.invoke(t, rack, invs)
				if !proto.Equal(g, ts) {
					t.Fatalf("step %d (seed %d): the twins answer differently to\n%s\nGo:\n%s\nTypeScript:\n%s",
						step, seed, describeInvocations(t, invs), prototext.Format(g), prototext.Format(ts))
				}
			}
			if goRack.alerts == 0 {
				t.Errorf("no rack alert in the whole stream: it did not exercise the correlation")
			}
		})
	}
}

// randomRackMessage returns a message a rack twin handles, or now and then
// one it refuses.
func randomRackMessage(t *testing.T, rng *rand.Rand, rack string, at time.Time) *twinflowv1.TypedValue {
	server := fmt.Sprintf("srv-%s-%d", rack[len(rack)-1:], rng.IntN(5))
	var v sdk.TypedValue
	var err error
	switch n := rng.IntN(20); {
	case n < 12:
		var open []datacenterv1.IncidentKind
		for _, k := range []datacenterv1.IncidentKind{3, 3, 3, 5, 5, 1, 2, 4} {
			if rng.IntN(3) == 0 {
				open = append(open, k)
			}
		}
		v, err = sdk.Encode(datacenter.ServerIncidentsType, &datacenterv1.ServerIncidents{
			ServerId: server, RackId: rack, Open: open, ChangedAt: timestamppb.New(at),
		})
	case n < 14:
		v, err = sdk.Encode(datacenter.ServerDecommissionedType, &datacenterv1.ServerDecommissioned{ServerId: server, RackId: rack, LeftAt: timestamppb.New(at)})
	case n < 19:
		v, err = sdk.Encode(datacenter.CorrelationCheckType, &datacenterv1.CorrelationCheck{})
	default:
		v, err = sdk.Encode(datacenter.ServerIncidentsType, &datacenterv1.ServerIncidents{RackId: rack}) // names no server
	}
	if err != nil {
		t.Fatal(err)
	}
	return &twinflowv1.TypedValue{Typename: v.Typename, Value: v.Bytes}
}

func describeInvocations(t *testing.T, invs []*twinflowv1.Invocation) string {
	var s string
	for _, inv := range invs {
		s += prototext.Format(inv) + "\n"
	}
	return s
}

// rackClient calls one rack endpoint and keeps the state it writes, as the
// runtime would.
type rackClient struct {
	fn     twinflowv1connect.FunctionServiceClient
	specs  []string
	state  map[string]map[string]*twinflowv1.TypedValue // rack -> name -> value
	alerts int
}

func newRackClient(t *testing.T, url string) *rackClient {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &rackClient{
		fn:    twinflowv1connect.NewFunctionServiceClient(&http.Client{Transport: tr}, url),
		state: make(map[string]map[string]*twinflowv1.TypedValue),
	}
}

// invoke runs one batch for the rack and returns its result; a first
// answer of missing states is answered as the runtime does.
func (c *rackClient) invoke(t *testing.T, rack string, invs []*twinflowv1.Invocation) *twinflowv1.AddressResult {
	t.Helper()
	for range 2 {
		b := &twinflowv1.AddressBatch{Target: &twinflowv1.Address{Type: datacenter.RackFunction, Id: rack}, Invocations: invs}
		for _, name := range c.specs {
			b.State = append(b.State, &twinflowv1.StateValue{Name: name, Value: c.state[rack][name]})
		}
		resp, err := c.fn.Invoke(t.Context(), connect.NewRequest(&twinflowv1.InvokeRequest{
			ProtocolVersion: twinflowv1.ProtocolVersion_PROTOCOL_VERSION_1,
			Batches:         []*twinflowv1.AddressBatch{b},
		}))
		if err != nil {
			t.Fatal(err)
		}
		r := resp.Msg.GetResults()[0]
		if m := r.GetMissingStates(); m != nil {
			for _, s := range m.GetSpecs() {
				c.specs = append(c.specs, s.GetName())
			}
			continue
		}
		for _, m := range r.GetEffects().GetStateMutations() {
			if c.state[rack] == nil {
				c.state[rack] = make(map[string]*twinflowv1.TypedValue)
			}
			if m.GetKind() == twinflowv1.StateMutation_KIND_SET {
				c.state[rack][m.GetName()] = m.GetValue()
			} else {
				delete(c.state[rack], m.GetName())
			}
		}
		c.alerts += len(slices.DeleteFunc(slices.Clone(r.GetEffects().GetEgress()), func(e *twinflowv1.EgressRecord) bool {
			return e.GetValue().GetTypename() != datacenter.RackAlertType.Typename()
		}))
		return r
	}
	t.Fatalf("%s still reports missing states after they were sent", datacenter.RackFunction)
	return nil
}
