package runtime

import (
	"fmt"
	"slices"
	"testing"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// TestHandledTypenames: the typenames of applied batches only, most recent
// first, each once, at most maxHandledTypenames.
func TestHandledTypenames(t *testing.T) {
	batch := func(ftype string, typenames ...string) *twinflowv1.AddressBatch {
		b := &twinflowv1.AddressBatch{Target: &twinflowv1.Address{Type: ftype, Id: "x"}}
		for _, tn := range typenames {
			b.Invocations = append(b.Invocations, &twinflowv1.Invocation{Argument: &twinflowv1.TypedValue{Typename: tn}})
		}
		return b
	}
	ok := &twinflowv1.AddressResult{Outcome: &twinflowv1.AddressResult_Effects{Effects: &twinflowv1.Effects{}}}
	failed := &twinflowv1.AddressResult{Outcome: &twinflowv1.AddressResult_Error{Error: &twinflowv1.InvocationError{}}}
	var h handledTypenames
	h.observe(&twinflowv1.InvokeRequest{Batches: []*twinflowv1.AddressBatch{batch("a/f", "t/1", "t/2"), batch("a/g", "t/3")}},
		&twinflowv1.InvokeResponse{Results: []*twinflowv1.AddressResult{ok, failed}})
	h.observe(&twinflowv1.InvokeRequest{Batches: []*twinflowv1.AddressBatch{batch("a/f", "t/1")}},
		&twinflowv1.InvokeResponse{Results: []*twinflowv1.AddressResult{ok}})
	if got := h.of("a/f"); !slices.Equal(got, []string{"t/1", "t/2"}) {
		t.Errorf("a/f handled %v, want [t/1 t/2]", got)
	}
	if got := h.of("a/g"); len(got) != 0 {
		t.Errorf("a/g failed, yet handled %v", got)
	}
	for i := range 2 * maxHandledTypenames {
		h.observe(&twinflowv1.InvokeRequest{Batches: []*twinflowv1.AddressBatch{batch("a/f", fmt.Sprintf("n/%d", i))}},
			&twinflowv1.InvokeResponse{Results: []*twinflowv1.AddressResult{ok}})
	}
	got := h.of("a/f")
	if len(got) != maxHandledTypenames || got[0] != fmt.Sprintf("n/%d", 2*maxHandledTypenames-1) {
		t.Errorf("after many typenames: %v", got)
	}
}
