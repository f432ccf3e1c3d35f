package runtime

import (
	"sync"

	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/spec"
)

// endpoints resolves function types to endpoints. Each module endpoint has
// one *shard.Endpoint per engine, so that shards count calls per endpoint
// rather than per function type.
type endpoints struct {
	module *spec.Module
	byURL  map[string]*shard.Endpoint
	cache  sync.Map // function type → *shard.Endpoint (nil: none serves it)
}

func newEndpoints(m *spec.Module, shards int) *endpoints {
	e := &endpoints{module: m, byURL: map[string]*shard.Endpoint{}}
	for _, ep := range m.Endpoints {
		key := ep.Functions + " " + ep.URL
		// A module endpoint's concurrent calls are shared out among the
		// shards, so that the limit holds without the shards coordinating.
		e.byURL[key] = &shard.Endpoint{
			URL:               ep.URL,
			Timeout:           ep.Timeout,
			MaxBatchAddresses: ep.MaxBatchAddresses,
			MaxBatchMessages:  ep.MaxBatchMessages,
			MaxInFlight:       max(1, ep.MaxInFlight/shards),
			MaxAttempts:       ep.MaxAttempts,
			MaxAge:            ep.MaxAge,
		}
	}
	return e
}

// For returns the endpoint serving a function type.
func (e *endpoints) For(functionType string) (*shard.Endpoint, bool) {
	if v, ok := e.cache.Load(functionType); ok {
		ep := v.(*shard.Endpoint)
		return ep, ep != nil
	}
	ep, ok := e.module.EndpointFor(functionType)
	var resolved *shard.Endpoint
	if ok {
		resolved = e.byURL[ep.Functions+" "+ep.URL]
	}
	e.cache.Store(functionType, resolved)
	return resolved, resolved != nil
}

// seen returns the function types looked up so far that an endpoint
// serves: every type the engine has invoked.
func (e *endpoints) seen() []string {
	var out []string
	e.cache.Range(func(k, v any) bool {
		if v.(*shard.Endpoint) != nil {
			out = append(out, k.(string))
		}
		return true
	})
	return out
}
