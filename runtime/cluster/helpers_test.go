package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/state"
)

// testLog shows warnings and errors of the code under test.
var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// env is a NATS cluster of tests and a connection to it.
type env struct {
	nc *clustertest.Cluster
	js jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	nc := clustertest.Start(t)
	_, js := nc.Connect(t)
	return &env{nc: nc, js: js}
}

// TestOnOneCluster runs the tests that need a NATS cluster, and leave its
// servers alone, on one cluster, in parallel: each works in a Twinflow
// cluster of its own name. Starting three servers for each would cost more
// than most of the tests.
func TestOnOneCluster(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, *env)
	}{
		{"OpenRecordsKeyGroups", testOpenRecordsKeyGroups},
		{"Membership", testMembership},
		{"DuplicateWorker", testDuplicateWorker},
		{"Leases", testLeases},
		{"PausedOwnerIsFenced", testPausedOwnerIsFenced},
		{"WriteBeforeMarkerIsHistory", testWriteBeforeMarkerIsHistory},
		{"CommitIsAtomicAcrossKeyGroups", testCommitIsAtomicAcrossKeyGroups},
		{"Restore", testRestore},
		{"UnreadableSnapshot", testUnreadableSnapshot},
		{"LargeRecord", testLargeRecord},
		{"Status", testStatus},
		{"MessagesWithCheckpoint", testMessagesWithCheckpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, e)
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// open opens the cluster called name with k key groups and a short member
// TTL, over a connection of its own.
func (e *env) open(t *testing.T, name string, k int) *Cluster {
	t.Helper()
	_, js := e.nc.Connect(t)
	c, err := Open(testContext(t), js, Config{Name: name, KeyGroups: k, MemberTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newStore opens a store in a temporary directory.
func newStore(t *testing.T, k int) *state.Store {
	t.Helper()
	s, err := openStore(t.TempDir(), k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openStore(dir string, k int) (*state.Store, error) {
	return state.Open(dir, state.Options{KeyGroups: k, CacheBytes: 16 << 20, MemTableBytes: 2 << 20, Logger: slog.New(slog.DiscardHandler)})
}

// key returns the key of a state value of address id in key group kg.
func key(kg int, id string) []byte {
	return state.ValueKey(kg, state.Address{Type: "test/counter", ID: id}, "count")
}

// model is the expected state of key groups: key -> value.
type model map[string]string

// changes returns the writes of m in key group kg as a Part's Changes.
func changes(kv map[string]string) func(func([]byte, []byte) bool) {
	return func(yield func([]byte, []byte) bool) {
		for k, v := range kv {
			var val []byte
			if v != "" {
				val = []byte(v)
			}
			if !yield([]byte(k), val) {
				return
			}
		}
	}
}

// apply records writes (an empty value is a delete) in m.
func (m model) apply(kv map[string]string) {
	for k, v := range kv {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
}

// checkStore fails unless key group kg of s holds exactly the keys of m in kg.
func checkStore(t *testing.T, s *state.Store, kg int, m model) {
	t.Helper()
	got := model{}
	if _, _, err := s.ScanKeyGroup(kg, func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := model{}
	lo, hi := state.KeyGroupBounds(kg)
	for k, v := range m {
		if k >= string(lo) && k < string(hi) {
			want[k] = v
		}
	}
	if len(got) != len(want) {
		t.Fatalf("key group %d holds %d keys, want %d", kg, len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key group %d: %x = %q, want %q", kg, k, got[k], v)
		}
	}
}

// counters returns writes setting n counters of key group kg to value.
func counters(kg, n int, value string) map[string]string {
	kv := make(map[string]string, n)
	for i := range n {
		kv[string(key(kg, fmt.Sprintf("addr-%06d", i)))] = value
	}
	return kv
}

// own joins the cluster as worker, acquires key group kg and restores it
// into store.
func own(t *testing.T, c *Cluster, m *Membership, kg int, store *state.Store) (*Owned, RestoreStats) {
	t.Helper()
	ctx := testContext(t)
	seen, err := c.LeaseOf(ctx, kg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, kg, m.Self().Holder(), seen)
	if err != nil {
		t.Fatal(err)
	}
	o, st, err := c.Restore(ctx, l, store)
	if err != nil {
		t.Fatal(err)
	}
	return o, st
}

func join(t *testing.T, c *Cluster, worker string) *Membership {
	t.Helper()
	m, err := c.Join(testContext(t), worker, "", testLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Leave(context.Background()) })
	return m
}

// commitLocal writes kv into key group kg of s, at the owner's head, as
// the engine commits a checkpoint locally once NATS stored it.
func commitLocal(t *testing.T, s *state.Store, o *Owned, kv map[string]string) {
	t.Helper()
	ov := state.NewOverlay()
	for k, v := range kv {
		if v == "" {
			ov.Delete([]byte(k))
		} else {
			ov.Set([]byte(k), []byte(v))
		}
	}
	state.PutPosition(ov, o.KeyGroup(), state.Position{Seq: o.Head(), Epoch: o.Epoch()})
	ov.Freeze()
	if _, err := s.Commit([]*state.Overlay{ov}, nil); err != nil {
		t.Fatal(err)
	}
}

// checkpoint commits kv as checkpoint id of o's key group, in NATS and then
// in s, and records it in m.
func checkpoint(t *testing.T, c *Cluster, o *Owned, s *state.Store, m model, id uint64, kv map[string]string) CommitStats {
	t.Helper()
	st, err := c.Commit(testContext(t), id, []Part{{Owned: o, Changes: changes(kv)}})
	if err != nil {
		t.Fatalf("commit %d: %v", id, err)
	}
	commitLocal(t, s, o, kv)
	m.apply(kv)
	return st
}

// subjectMessages counts the messages of key group kg's changelog.
func subjectMessages(t *testing.T, c *Cluster, kg int) uint64 {
	t.Helper()
	info, err := c.log.Info(testContext(t), jetstream.WithSubjectFilter(c.changelogSubject(kg)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[c.changelogSubject(kg)]
}
