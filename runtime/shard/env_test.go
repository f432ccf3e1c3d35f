package shard

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// recEnv is an Env that records what a core asks of the world, with a
// clock the test moves.
type recEnv struct {
	now       time.Time
	calls     []*Call
	parts     []*Part
	sent      []Item
	replies   []*storagev1.EgressRecord
	published []*storagev1.EgressRecord
	refuse    bool // PublishNow refuses, as a full publisher queue does
	specs     map[string][]*twinflowv1.StateSpec
	wants     int
}

func newRecEnv() *recEnv {
	return &recEnv{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), specs: map[string][]*twinflowv1.StateSpec{}}
}

func (e *recEnv) Now() time.Time                  { return e.now }
func (e *recEnv) Wall() time.Time                 { return e.now }
func (e *recEnv) Send(shard int, it Item)         { e.sent = append(e.sent, it) }
func (e *recEnv) Call(c *Call)                    { e.calls = append(e.calls, c) }
func (e *recEnv) Reply(r *storagev1.EgressRecord) { e.replies = append(e.replies, r) }
func (e *recEnv) Part(p *Part)                    { e.parts = append(e.parts, p) }
func (e *recEnv) WantCheckpoint()                 { e.wants++ }
func (e *recEnv) PublishNow(recs []*storagev1.EgressRecord) bool {
	if e.refuse {
		return false
	}
	e.published = append(e.published, recs...)
	return true
}
func (e *recEnv) SaveSpecs(ft string, s []*twinflowv1.StateSpec) error {
	e.specs[ft] = s
	return nil
}

// takeCalls returns the calls started since the last take.
func (e *recEnv) takeCalls() []*Call {
	c := e.calls
	e.calls = nil
	return c
}

// memStore opens a store on Pebble's in-memory file system.
func memStore(t testing.TB, k int) *state.Store {
	t.Helper()
	store, err := state.Open("state", state.Options{KeyGroups: k, FS: vfs.NewMem(), CacheBytes: 16 << 20, MemTableBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// testConfig is a one-shard configuration over k key groups with endpoints
// by function type; a type without one has no endpoint.
func testConfig(k int, eps map[string]*Endpoint, egress []router.EgressRule) Config {
	egresses, err := router.NewEgresses(egress)
	if err != nil {
		panic(err)
	}
	return Config{
		Index: 0, Shards: 1, KeyGroups: k, KGLo: 0, KGHi: k, Sources: 1,
		Locate: func(id string) (int, int) { return 0, keygroup.Of(id, k) },
		EndpointFor: func(ft string) (*Endpoint, bool) {
			ep, ok := eps[ft]
			return ep, ok
		},
		Egress:          egresses,
		MaxQueueBytes:   1 << 30,
		MaxOverlayBytes: 1 << 30,
		TimerScanLimit:  64,
	}
}

// newTestCore returns a core over store, closed with the test.
func newTestCore(t testing.TB, cfg Config, env Env, store *state.Store, specs *Specs) *Core {
	t.Helper()
	if specs == nil {
		specs = NewSpecs(nil)
	}
	core := NewCore(cfg, env, state.NewLayers(store, DefaultDedupWindow, quietLog), specs, NewMetrics(nil), quietLog)
	t.Cleanup(core.Close)
	return core
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
