package checkpoint_test

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// memStore opens a store on an in-memory file system, closed with the test.
func memStore(t testing.TB) *state.Store {
	t.Helper()
	return openStore(t, vfs.NewMem())
}

func openStore(t testing.TB, fs vfs.FS) *state.Store {
	t.Helper()
	s, err := state.Open("/data", state.Options{KeyGroups: 16, FS: fs, CacheBytes: 16 << 20, MemTableBytes: 2 << 20, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// part returns shard's part of checkpoint id with the egress records recs
// and an overlay holding nothing.
func part(id uint64, shard int, recs ...*storagev1.EgressRecord) *shard.Part {
	o := state.NewOverlay()
	o.Freeze()
	return partWith(id, shard, o, recs...)
}

func partWith(id uint64, sh int, o *state.Overlay, recs ...*storagev1.EgressRecord) *shard.Part {
	return &shard.Part{ID: id, Shard: sh, Overlay: o, Egress: recs}
}

// records returns n egress records whose data name their shard and index.
func records(sh, n int) []*storagev1.EgressRecord {
	out := make([]*storagev1.EgressRecord, n)
	for i := range out {
		out[i] = &storagev1.EgressRecord{Subject: "out", Data: fmt.Appendf(nil, "s%d-%d", sh, i)}
	}
	return out
}

func begin(t *testing.T, c *checkpoint.Core) uint64 {
	t.Helper()
	id, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func addPart(t *testing.T, c *checkpoint.Core, p *shard.Part) {
	t.Helper()
	if err := c.AddPart(p); err != nil {
		t.Fatal(err)
	}
}

func seal(t *testing.T, c *checkpoint.Core) *checkpoint.Commit {
	t.Helper()
	cm, err := c.Seal(time.UnixMilli(1_700_000_000_000), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func commit(t *testing.T, s *state.Store, cm *checkpoint.Commit) {
	t.Helper()
	if _, err := s.Commit(cm.Overlays, cm.Meta); err != nil {
		t.Fatal(err)
	}
}

func TestCoreIDsFollowTheLatestCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		last *storagev1.Manifest
		want uint64
	}{
		{"new data dir", nil, 1},
		{"after checkpoint 41", &storagev1.Manifest{Id: 41}, 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkpoint.NewCore(1, nil, "d", 10, tc.last)
			id := begin(t, c)
			if id != tc.want {
				t.Fatalf("Begin = %d, want %d", id, tc.want)
			}
			if got := c.InProgress(); got != id {
				t.Errorf("InProgress = %d, want %d", got, id)
			}
			if _, err := c.Begin(); err == nil || !strings.Contains(err.Error(), "still in progress") {
				t.Errorf("Begin while %d is in progress: %v, want an error saying so", id, err)
			}
			addPart(t, c, part(id, 0))
			cm := seal(t, c)
			if cm.Manifest.GetId() != id {
				t.Errorf("sealed manifest %d, want %d", cm.Manifest.GetId(), id)
			}
			if c.Latest() != tc.last {
				t.Errorf("Latest changed before Done")
			}
			c.Done()
			if c.Latest() != cm.Manifest || c.InProgress() != 0 {
				t.Errorf("after Done: Latest %v, InProgress %d; want the sealed manifest and none", c.Latest(), c.InProgress())
			}
			if next := begin(t, c); next != id+1 {
				t.Errorf("next Begin = %d, want %d", next, id+1)
			}
		})
	}
}

func TestCoreReaderSequences(t *testing.T) {
	// "gone" is in the last manifest but no longer configured: its
	// sequence is kept for when it comes back.
	last := &storagev1.Manifest{Id: 3, ReaderSequences: map[string]uint64{"in": 10, "gone": 7}}
	c := checkpoint.NewCore(1, []string{"in", "new"}, "d", 10, last)
	id := begin(t, c)
	addPart(t, c, part(id, 0))
	c.AddReader(id, "in", 15)
	c.AddReader(id-1, "new", 99) // of another checkpoint: ignored
	if c.Ready() {
		t.Fatal("Ready before reader new answered")
	}
	c.AddReader(id, "new", 2)
	cm := seal(t, c)
	want := map[string]uint64{"in": 15, "new": 2, "gone": 7}
	if got := cm.Manifest.GetReaderSequences(); !maps.Equal(got, want) {
		t.Errorf("reader sequences %v, want %v", got, want)
	}
	if got := last.GetReaderSequences(); !maps.Equal(got, map[string]uint64{"in": 10, "gone": 7}) {
		t.Errorf("the last manifest changed: %v", got)
	}
}

func TestCoreRejectsStrayParts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(c *checkpoint.Core) error
		want  string
	}{
		{"no checkpoint in progress", func(c *checkpoint.Core) error {
			return c.AddPart(part(1, 0))
		}, "shard 0 sent a part of checkpoint 1 while none is in progress"},
		{"part of another checkpoint", func(c *checkpoint.Core) error {
			id, _ := c.Begin()
			return c.AddPart(part(id+1, 1))
		}, "checkpoint 1: shard 1 sent a part of checkpoint 2"},
		{"part of the last checkpoint", func(c *checkpoint.Core) error {
			id, _ := c.Begin()
			return c.AddPart(part(id-1, 0))
		}, "checkpoint 1: shard 0 sent a part of checkpoint 0"},
		{"a shard's second part", func(c *checkpoint.Core) error {
			id, _ := c.Begin()
			if err := c.AddPart(part(id, 1)); err != nil {
				return err
			}
			return c.AddPart(part(id, 1))
		}, "checkpoint 1: shard 1 sent its part twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checkpoint.NewCore(2, nil, "d", 10, nil)
			err := tc.steps(c)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got error %v, want %q", err, tc.want)
			}
			if c.Ready() {
				t.Error("Ready after a stray part")
			}
		})
	}
}

func TestCoreReadyWhenEveryPartAndReaderCame(t *testing.T) {
	type event struct {
		shard  int    // a part of this shard, unless reader is set
		reader string // this reader's sequence
	}
	events := []event{{shard: 0}, {shard: 1}, {shard: 2}, {reader: "a"}, {reader: "b"}}
	// Every event last once, the others before it in order.
	for lastEv := range events {
		order := append(append([]event{}, events[:lastEv]...), events[lastEv+1:]...)
		order = append(order, events[lastEv])
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			c := checkpoint.NewCore(3, []string{"a", "b"}, "d", 10, nil)
			if c.Ready() {
				t.Fatal("Ready with no checkpoint in progress")
			}
			id := begin(t, c)
			for i, ev := range order {
				if c.Ready() {
					t.Fatalf("Ready after %v", order[:i])
				}
				if _, err := c.Seal(time.Now(), 0); err == nil || !strings.Contains(err.Error(), "not ready") {
					t.Fatalf("Seal after %v: %v, want an error saying it is not ready", order[:i], err)
				}
				if ev.reader != "" {
					c.AddReader(id, ev.reader, 1)
					c.AddReader(id, ev.reader, 2) // a repeat counts once
				} else {
					addPart(t, c, part(id, ev.shard))
				}
			}
			if !c.Ready() {
				t.Fatalf("not Ready after %v", order)
			}
		})
	}
}

// The message ids of exactly-once egress sort, as bytes, in publication
// order: by checkpoint, then shard, then index. Pending records are listed
// by id, so that is the order a crash leaves them to be published in.
func TestCoreSealNamesEgressInPublicationOrder(t *testing.T) {
	const shards = 11
	store := memStore(t)
	c := checkpoint.NewCore(shards, nil, "dep", 10, &storagev1.Manifest{Id: 8})
	var want []string // data, in publication order
	for range 2 {
		id := begin(t, c)
		// Shard 10's part first: the order parts come in does not matter.
		parts := map[int][]*storagev1.EgressRecord{10: records(10, 2), 2: records(2, 11)}
		addPart(t, c, part(id, 10, parts[10]...))
		for sh := range shards {
			if sh != 10 {
				addPart(t, c, part(id, sh, parts[sh]...))
			}
		}
		cm := seal(t, c)
		if cm.Egress != 13 {
			t.Errorf("checkpoint %d: Egress = %d, want 13", id, cm.Egress)
		}
		for _, sh := range []int{2, 10} {
			for i, r := range parts[sh] {
				if want := fmt.Sprintf("dep-%020d-%05d-%010d", id, sh, i); r.GetMsgId() != want {
					t.Errorf("checkpoint %d shard %d record %d: id %q, want %q", id, sh, i, r.GetMsgId(), want)
				}
				want = append(want, string(r.GetData()))
			}
		}
		commit(t, store, cm)
		c.Done()
	}
	if got := c.Latest().GetId(); got != 10 {
		t.Fatalf("latest %d, want 10", got)
	}
	// Spot-check the format itself.
	pending, err := store.PendingEgress("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pending[len(pending)-1].GetMsgId(), "dep-00000000000000000010-00010-0000000001"; got != want {
		t.Errorf("last message id %q, want %q", got, want)
	}
	var got []string
	for _, r := range pending {
		got = append(got, string(r.GetData()))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("pending egress in the order\n%v\nwant publication order\n%v", got, want)
	}
}

func TestCoreSealWritesTheManifestAndRetention(t *testing.T) {
	const retain = 3
	store := memStore(t)
	c := checkpoint.NewCore(2, []string{"in"}, "d", retain, nil)
	for range 5 {
		id := begin(t, c)
		c.AddReader(id, "in", id*10)
		addPart(t, c, part(id, 0))
		addPart(t, c, part(id, 1))
		commit(t, store, seal(t, c))
		c.Done()
	}

	id := begin(t, c)
	c.AddReader(id, "in", 60)
	o0, o1 := state.NewOverlay(), state.NewOverlay()
	o0.Set([]byte("k0"), []byte("v0"))
	o1.Set([]byte("k1"), []byte("value-1"))
	o0.Freeze()
	o1.Freeze()
	p0, p1 := partWith(id, 0, o0), partWith(id, 1, o1, records(1, 1)...)
	p0.Pause, p1.Pause = 2*time.Millisecond, 5*time.Millisecond
	addPart(t, c, p1)
	addPart(t, c, p0)
	completed := time.UnixMilli(1_800_000_000_123)
	cm, err := c.Seal(completed, 1500*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	m := cm.Manifest
	if m.GetId() != 6 || m.GetShards() != 2 || m.GetCompletedAtUnixMillis() != completed.UnixMilli() ||
		m.GetDurationMillis() != 1.5 || m.GetPauseMillis() != 5 {
		t.Errorf("manifest %v: want id 6, 2 shards, completed at %d, duration 1.5 ms, pause 5 ms (the longest)", m, completed.UnixMilli())
	}
	// The bytes of the state and of the egress records; not of the
	// manifest itself.
	egress := state.NewOverlay()
	for _, r := range p1.Egress {
		if err := state.PutEgress(egress, r); err != nil {
			t.Fatal(err)
		}
	}
	if want := o0.DataBytes() + o1.DataBytes() + egress.DataBytes(); m.GetBytes() != want {
		t.Errorf("manifest bytes %d, want the overlays' and the egress records' %d", m.GetBytes(), want)
	}
	if len(cm.Parts) != 2 || len(cm.Overlays) != 2 {
		t.Errorf("commit has %d parts and %d overlays, want 2 of each", len(cm.Parts), len(cm.Overlays))
	}
	commit(t, store, cm)

	for key, want := range map[string]string{"k0": "v0", "k1": "value-1"} {
		v, ok, err := state.NewView(store).Get([]byte(key))
		if err != nil || !ok || string(v) != want {
			t.Errorf("%s = %q, %v, %v after the commit; want %q", key, v, ok, err, want)
		}
	}
	mans, err := store.Manifests()
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, m := range mans {
		ids = append(ids, m.GetId())
	}
	if fmt.Sprint(ids) != "[4 5 6]" {
		t.Errorf("retained manifests %v, want the last %d: [4 5 6]", ids, retain)
	}
	latest, _, err := store.LatestManifest()
	if err != nil {
		t.Fatal(err)
	}
	if latest.GetId() != 6 || latest.GetReaderSequences()["in"] != 60 {
		t.Errorf("stored latest manifest %v, want 6 with reader in at 60", latest)
	}
}

func TestCoreAbortStartsAfresh(t *testing.T) {
	last := &storagev1.Manifest{Id: 4, ReaderSequences: map[string]uint64{"in": 40}}
	c := checkpoint.NewCore(2, []string{"in"}, "d", 10, last)
	id := begin(t, c)
	addPart(t, c, part(id, 0))
	c.AddReader(id, "in", 50)
	c.Abort()
	if c.InProgress() != 0 || c.Latest() != last {
		t.Fatalf("after Abort: in progress %d, latest %v; want none and the last", c.InProgress(), c.Latest())
	}
	c.Done() // nothing in progress: no effect
	if c.Latest() != last {
		t.Fatalf("Done after Abort made %v the latest", c.Latest())
	}

	id = begin(t, c)
	if id <= last.GetId() {
		t.Fatalf("Begin after Abort = %d, want after %d", id, last.GetId())
	}
	// Shard 0's part of the aborted checkpoint and the reader's sequence
	// do not count for this one.
	addPart(t, c, part(id, 0))
	addPart(t, c, part(id, 1))
	if c.Ready() {
		t.Fatal("Ready without the reader's sequence of this checkpoint")
	}
	c.AddReader(id, "in", 45)
	cm := seal(t, c)
	if got := cm.Manifest.GetReaderSequences()["in"]; got != 45 {
		t.Errorf("reader sequence %d, want 45", got)
	}
}
