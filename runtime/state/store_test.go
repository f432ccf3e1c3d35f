package state

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

func TestFormatMajorVersionIsNewest(t *testing.T) {
	// When Pebble is upgraded, decide deliberately whether to move data
	// directories to its newest format.
	if FormatMajorVersion != pebble.FormatNewest {
		t.Errorf("FormatMajorVersion = %v, but this Pebble's newest is %v", FormatMajorVersion, pebble.FormatNewest)
	}
}

func TestCommitSurvivesCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 8)
	a, b, meta := NewOverlay(), NewOverlay(), NewOverlay()
	a.Set([]byte("a1"), []byte("1"))
	a.Set([]byte("x"), []byte("from a"))
	a.Set([]byte("empty"), nil)
	b.Set([]byte("b1"), []byte("1"))
	b.Set([]byte("x"), []byte("from b")) // b is newer: it wins
	if err := PutManifest(meta, &storagev1.Manifest{Id: 1, KeyGroups: 8}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Commit([]*Overlay{a, b}, meta)
	if err != nil || n <= 0 {
		t.Fatalf("Commit = %d, %v", n, err)
	}
	// An overlay that is not committed is lost in a crash.
	lost := NewOverlay()
	lost.Set([]byte("a1"), []byte("overwritten"))
	lost.Set([]byte("lost"), []byte("1"))
	if got, _ := mustGet(t, NewView(s, lost), "a1"); got != "overwritten" {
		t.Fatalf("view through the uncommitted overlay reads a1 = %q", got)
	}

	fs2 := crash(fs)
	closeStore(t, s)
	s2 := openMem(t, fs2, 8)
	defer closeStore(t, s2)
	v := NewView(s2)
	for key, want := range map[string]string{"a1": "1", "b1": "1", "x": "from b", "empty": ""} {
		if got, ok := mustGet(t, v, key); !ok || got != want {
			t.Errorf("after crash: Get(%q) = %q, %v, want %q", key, got, ok, want)
		}
	}
	if _, ok := mustGet(t, v, "lost"); ok {
		t.Error("after crash: uncommitted key present")
	}
	m, ok, err := s2.LatestManifest()
	if err != nil || !ok || m.GetId() != 1 {
		t.Errorf("LatestManifest = %v, %v, %v", m, ok, err)
	}
}

// TestCommitAtomic crashes after each commit, keeping a random part of the
// data that was not synced, and checks that every commit is there in full.
func TestCommitAtomic(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 8)
	defer closeStore(t, s)
	for i := range 10 {
		a, b := NewOverlay(), NewOverlay()
		for j := range 300 {
			a.Set(fmt.Appendf(nil, "a%03d", j), []byte{byte(i)})
			b.Set(fmt.Appendf(nil, "b%03d", j), []byte{byte(i)})
		}
		commit(t, s, a, b)
		fs2 := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 0))})
		s2 := openMem(t, fs2, 8)
		n := 0
		if err := NewView(s2).Scan([]byte("a"), []byte("c"), func(_, val []byte) error {
			if val[0] != byte(i) {
				return fmt.Errorf("value from round %d", val[0])
			}
			n++
			return nil
		}); err != nil || n != 600 {
			t.Fatalf("round %d: after crash, %d of 600 keys of the last commit: %v", i, n, err)
		}
		closeStore(t, s2)
	}
}

func TestOpenKeyGroups(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 64)
	if s.KeyGroups() != 64 {
		t.Errorf("KeyGroups = %d", s.KeyGroups())
	}
	closeStore(t, s)

	_, err := Open(testDir, Options{KeyGroups: 128, FS: fs, Logger: slog.New(slog.DiscardHandler)})
	var mismatch *KeyGroupsMismatchError
	if !errors.As(err, &mismatch) || mismatch.Stored != 64 || mismatch.Requested != 128 {
		t.Fatalf("Open with another K = %v, want a KeyGroupsMismatchError", err)
	}
	for _, want := range []string{testDir, "64", "128"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}

	s = openMem(t, fs, 0) // zero: whatever the directory has
	if s.KeyGroups() != 64 {
		t.Errorf("KeyGroups with 0 = %d, want 64", s.KeyGroups())
	}
	closeStore(t, s)

	s = openMem(t, vfs.NewCrashableMem(), 0)
	if s.KeyGroups() != 128 {
		t.Errorf("KeyGroups of a new directory with 0 = %d, want 128", s.KeyGroups())
	}
	closeStore(t, s)

	if _, err := Open(testDir, Options{KeyGroups: 100, FS: fs}); err == nil || !strings.Contains(err.Error(), "power of two") {
		t.Errorf("Open with K=100 = %v", err)
	}
}

func TestOpenForeignPebble(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := pebble.Open(testDir, &pebble.Options{FS: fs, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("hello"), []byte("world"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(testDir, Options{FS: fs, Logger: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "not a twinflow data directory") {
		t.Errorf("Open of a foreign Pebble directory = %v", err)
	}
}

func TestSpecsPersist(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 8)
	spec := func(name, typ string, after int64) *twinflowv1.StateSpec {
		return &twinflowv1.StateSpec{Name: name, Typename: typ, ExpireAfterMillis: after}
	}
	if _, err := s.SaveSpecs("dc/server", []*twinflowv1.StateSpec{spec("a", "t/a", 0), spec("b", "t/b", 0)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.SaveSpecs("dc/server", []*twinflowv1.StateSpec{spec("b", "t/b2", 5), spec("c", "t/c", 0)})
	if err != nil {
		t.Fatal(err)
	}
	want := []*twinflowv1.StateSpec{spec("a", "t/a", 0), spec("b", "t/b2", 5), spec("c", "t/c", 0)}
	if !slices.EqualFunc(got, want, func(a, b *twinflowv1.StateSpec) bool { return proto.Equal(a, b) }) {
		t.Errorf("SaveSpecs = %v, want %v", got, want)
	}
	if _, err := s.SaveSpecs("dc/rack", []*twinflowv1.StateSpec{spec("x", "t/x", 0)}); err != nil {
		t.Fatal(err)
	}
	// Synced at once: survives a crash with no commit.
	fs2 := crash(fs)
	closeStore(t, s)
	s = openMem(t, fs2, 8)
	defer closeStore(t, s)
	all, err := s.LoadSpecs()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || len(all["dc/rack"]) != 1 ||
		!slices.EqualFunc(all["dc/server"], want, func(a, b *twinflowv1.StateSpec) bool { return proto.Equal(a, b) }) {
		t.Errorf("LoadSpecs after reopen = %v", all)
	}
}

func TestSavepoint(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir+"/data", Options{KeyGroups: 16, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	o := NewOverlay()
	PutValue(o, 3, Address{"dc/server", "s1"}, "n", Value{Typename: "t", Data: []byte("v1")})
	commit(t, s, o)
	if err := s.Savepoint(dir + "/sp"); err != nil {
		t.Fatal(err)
	}
	if err := s.Savepoint(dir + "/sp"); err == nil {
		t.Error("Savepoint into an existing directory succeeded")
	}
	// Later commits do not reach the savepoint.
	o = NewOverlay()
	PutValue(o, 3, Address{"dc/server", "s1"}, "n", Value{Typename: "t", Data: []byte("v2")})
	commit(t, s, o)
	closeStore(t, s)

	sp, err := Open(dir+"/sp", Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, sp)
	if sp.KeyGroups() != 16 {
		t.Errorf("savepoint KeyGroups = %d", sp.KeyGroups())
	}
	vals, _, err := ReadAddress(NewView(sp), 3, Address{"dc/server", "s1"}, 0)
	if err != nil || string(vals["n"].Data) != "v1" {
		t.Errorf("savepoint value = %v, %v", vals, err)
	}
}

func TestCheckpointMetadata(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, 8)
	defer closeStore(t, s)
	if _, ok, err := s.LatestManifest(); ok || err != nil {
		t.Errorf("LatestManifest of a new store = %v, %v", ok, err)
	}
	for id := uint64(1); id <= 3; id++ {
		meta := NewOverlay()
		if err := PutManifest(meta, &storagev1.Manifest{Id: id, ReaderSequences: map[string]uint64{"in": id * 10}}); err != nil {
			t.Fatal(err)
		}
		PutReaderSequence(meta, "in", id*10)
		PutReaderSequence(meta, "other", 7)
		if id == 3 {
			DeleteManifest(meta, 1)
		}
		if _, err := s.Commit(nil, meta); err != nil {
			t.Fatal(err)
		}
	}
	m, ok, err := s.LatestManifest()
	if err != nil || !ok || m.GetId() != 3 || m.GetReaderSequences()["in"] != 30 {
		t.Errorf("LatestManifest = %v, %v, %v", m, ok, err)
	}
	ms, err := s.Manifests()
	if err != nil || len(ms) != 2 || ms[0].GetId() != 2 || ms[1].GetId() != 3 {
		t.Errorf("Manifests = %v, %v", ms, err)
	}
	seqs, err := s.ReaderSequences()
	if err != nil || len(seqs) != 2 || seqs["in"] != 30 || seqs["other"] != 7 {
		t.Errorf("ReaderSequences = %v, %v", seqs, err)
	}
}

func TestEgress(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	o := NewOverlay()
	for _, id := range []string{"c1-0002", "c1-0001", "c1-0003"} {
		if err := PutEgress(o, &storagev1.EgressRecord{Subject: "out", MsgId: id, Data: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := PutEgress(o, &storagev1.EgressRecord{Subject: "out"}); err == nil {
		t.Error("PutEgress without a message id succeeded")
	}
	// Not pending until committed.
	if recs, err := s.PendingEgress("", 0); err != nil || len(recs) != 0 {
		t.Errorf("PendingEgress before commit = %v, %v", recs, err)
	}
	commit(t, s, o)
	ids := func(recs []*storagev1.EgressRecord) (out []string) {
		for _, r := range recs {
			out = append(out, r.GetMsgId())
		}
		return out
	}
	recs, err := s.PendingEgress("", 2)
	if err != nil || !slices.Equal(ids(recs), []string{"c1-0001", "c1-0002"}) {
		t.Errorf("PendingEgress(\"\", 2) = %v, %v", ids(recs), err)
	}
	recs, err = s.PendingEgress("c1-0002", 0)
	if err != nil || !slices.Equal(ids(recs), []string{"c1-0002", "c1-0003"}) {
		t.Errorf("PendingEgress(c1-0002) = %v, %v", ids(recs), err)
	}
	if err := s.DeleteEgress("c1-0001", "c1-0003"); err != nil {
		t.Fatal(err)
	}
	recs, err = s.PendingEgress("", 0)
	if err != nil || !slices.Equal(ids(recs), []string{"c1-0002"}) {
		t.Errorf("PendingEgress after delete = %v, %v", ids(recs), err)
	}
}

func TestMailbox(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	o := NewOverlay()
	v := NewView(s, o)
	if m, err := LoadMailbox(v, 2); err != nil || len(m.GetPending()) != 0 {
		t.Errorf("LoadMailbox of nothing = %v, %v", m, err)
	}
	want := &storagev1.Mailbox{Pending: []*storagev1.Pending{
		{Target: &twinflowv1.Address{Type: "dc/server", Id: "s1"}, Argument: &twinflowv1.TypedValue{Typename: "t", Value: []byte("1")}},
		{Target: &twinflowv1.Address{Type: "dc/server", Id: "s2"}, Caller: &twinflowv1.Address{Type: "dc/rack", Id: "r"}, ReplyTo: "_INBOX.x"},
	}}
	if err := PutMailbox(o, 2, want); err != nil {
		t.Fatal(err)
	}
	commit(t, s, o)
	got, err := LoadMailbox(NewView(s), 2)
	if err != nil || !proto.Equal(got, want) {
		t.Errorf("LoadMailbox = %v, %v", got, err)
	}
	o = NewOverlay()
	if err := PutMailbox(o, 2, &storagev1.Mailbox{}); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMailbox(NewView(s, o), 2); err != nil || len(got.GetPending()) != 0 {
		t.Errorf("LoadMailbox after emptying = %v, %v", got, err)
	}
}

func TestOpenCacheTooSmall(t *testing.T) {
	_, err := Open(testDir, Options{FS: vfs.NewCrashableMem(), CacheBytes: 64 << 20, MemTableBytes: 32 << 20})
	if err == nil || !strings.Contains(err.Error(), "at least 4 times") {
		t.Errorf("Open with a cache of 2 memtables = %v", err)
	}
}

// TestConcurrentCommitAndReads reads a frozen overlay through a shard's
// view while the coordinator commits it, and registers specs from several
// goroutines; run with the race detector.
func TestConcurrentCommitAndReads(t *testing.T) {
	s := openMem(t, vfs.NewCrashableMem(), 8)
	defer closeStore(t, s)
	handed := NewOverlay()
	for i := range 2000 {
		PutValue(handed, i%8, Address{"dc/server", fmt.Sprint(i)}, "v", Value{Typename: "t", Data: []byte("x")})
	}
	handed.Freeze()
	cur := NewOverlay()
	done := make(chan error, 5)
	go func() {
		_, err := s.Commit([]*Overlay{handed}, nil)
		done <- err
	}()
	for i := range 4 {
		go func() {
			_, err := s.SaveSpecs("dc/server", []*twinflowv1.StateSpec{{Name: fmt.Sprint("s", i), Typename: "t"}})
			done <- err
		}()
	}
	v := NewView(s, cur, handed)
	for i := range 2000 {
		addr := Address{"dc/server", fmt.Sprint(i)}
		vals, _, err := ReadAddress(v, i%8, addr, 0)
		if err != nil || len(vals) != 1 {
			t.Fatalf("ReadAddress(%v) during commit = %v, %v", addr, vals, err)
		}
		PutValue(cur, i%8, addr, "w", Value{Typename: "t"})
	}
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if specs, err := s.Specs("dc/server"); err != nil || len(specs) != 4 {
		t.Errorf("Specs after concurrent SaveSpecs = %v, %v", specs, err)
	}
}
