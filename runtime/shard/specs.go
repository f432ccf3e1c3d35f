package shard

import (
	"slices"
	"sync"
	"sync/atomic"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"google.golang.org/protobuf/proto"
)

// Specs holds the state specs registered per function type. Shards read it
// on every dispatch without a lock; additions, rare, copy the map.
type Specs struct {
	mu sync.Mutex // serializes writers
	m  atomic.Pointer[map[string][]*twinflowv1.StateSpec]
}

// NewSpecs returns a registry holding initial, as loaded from storage.
func NewSpecs(initial map[string][]*twinflowv1.StateSpec) *Specs {
	s := &Specs{}
	m := make(map[string][]*twinflowv1.StateSpec, len(initial))
	for k, v := range initial {
		m[k] = v
	}
	s.m.Store(&m)
	return s
}

// Of returns the specs of a function type. The caller must not modify them.
func (s *Specs) Of(functionType string) []*twinflowv1.StateSpec {
	return (*s.m.Load())[functionType]
}

// All returns a copy of the whole registry.
func (s *Specs) All() map[string][]*twinflowv1.StateSpec {
	m := *s.m.Load()
	out := make(map[string][]*twinflowv1.StateSpec, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Merge adds specs to a function type, replacing specs of the same name,
// and returns the resulting list and whether anything changed.
func (s *Specs) Merge(functionType string, add []*twinflowv1.StateSpec) ([]*twinflowv1.StateSpec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	merged := slices.Clone(old[functionType])
	changed := false
	for _, a := range add {
		i := slices.IndexFunc(merged, func(x *twinflowv1.StateSpec) bool { return x.GetName() == a.GetName() })
		switch {
		case i < 0:
			merged = append(merged, proto.Clone(a).(*twinflowv1.StateSpec))
			changed = true
		case !proto.Equal(merged[i], a):
			merged[i] = proto.Clone(a).(*twinflowv1.StateSpec)
			changed = true
		}
	}
	if !changed {
		return old[functionType], false
	}
	slices.SortFunc(merged, func(a, b *twinflowv1.StateSpec) int {
		switch {
		case a.GetName() < b.GetName():
			return -1
		case a.GetName() > b.GetName():
			return 1
		}
		return 0
	})
	m := make(map[string][]*twinflowv1.StateSpec, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[functionType] = merged
	s.m.Store(&m)
	return merged, true
}
