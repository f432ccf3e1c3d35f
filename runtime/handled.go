package runtime

import (
	"slices"
	"sync"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// maxHandledTypenames bounds the typenames remembered per function type.
const maxHandledTypenames = 16

// handledTypenames remembers, per function type, the typenames of the
// messages its function handled successfully, most recent first. Functions
// declare the state they keep but not the messages they take; what they
// were seen to take is what the runtime can tell a sender (through
// ListFunctionTypes) when a message of another type is refused.
type handledTypenames struct {
	mu struct {
		sync.Mutex
		byType map[string][]string // guarded by mu
	}
}

// observe records the typenames of the batches a call's response applied.
func (h *handledTypenames) observe(req *twinflowv1.InvokeRequest, resp *twinflowv1.InvokeResponse) {
	batches := req.GetBatches()
	if len(resp.GetResults()) != len(batches) {
		return // refused as a whole by the shard
	}
	for i, res := range resp.GetResults() {
		// Results answer batches in order; one that does not is
		// dead-lettered by the shard, and teaches nothing here.
		ftype := batches[i].GetTarget().GetType()
		if t := res.GetTarget(); res.GetEffects() == nil || t != nil && t.GetType() != ftype {
			continue
		}
		for _, inv := range batches[i].GetInvocations() {
			h.add(ftype, inv.GetArgument().GetTypename())
		}
	}
}

func (h *handledTypenames) add(functionType, typename string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.mu.byType[functionType]
	if len(list) > 0 && list[0] == typename {
		return // the common case: the same message type again
	}
	if i := slices.Index(list, typename); i >= 0 {
		list = slices.Delete(list, i, i+1)
	} else if len(list) == maxHandledTypenames {
		list = list[:len(list)-1]
	}
	if h.mu.byType == nil {
		h.mu.byType = map[string][]string{}
	}
	h.mu.byType[functionType] = slices.Insert(list, 0, typename)
}

// of returns the typenames a function type handled, most recent first.
func (h *handledTypenames) of(functionType string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.mu.byType[functionType])
}
