package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
)

// waitLimit bounds every wait of these tests: reaching it means the
// coordinator is stuck, never that it was slow.
const waitLimit = 10 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// receive returns the next value from ch, or fails the test saying what it
// waited for.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("still waiting for %s after %v", what, waitLimit)
		panic("unreachable")
	}
}

// fakeShard plays a shard's side of a checkpoint: at the coordinator's
// barrier it hands over a part holding the writes and egress records the
// test gave it since the last one.
type fakeShard struct {
	index int
	inbox *shard.Inbox
	coord *checkpoint.Coordinator

	mu struct {
		sync.Mutex
		writes map[string]string
		egress []*storagev1.EgressRecord
		sent   []*shard.Part
	}
	// committed receives the parts the coordinator reports durable, with
	// the id of the store's latest manifest when it did.
	committed chan committedPart
	store     checkpoint.Store
}

type committedPart struct {
	part   *shard.Part
	latest uint64
}

func (s *fakeShard) Inbox() *shard.Inbox { return s.inbox }

func (s *fakeShard) Committed(p *shard.Part) {
	m, _, err := s.store.LatestManifest()
	if err != nil {
		panic(err)
	}
	s.committed <- committedPart{p, m.GetId()}
}

// write sets key to val in the shard's next part.
func (s *fakeShard) write(key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.writes[key] = val
}

// emit adds exactly-once egress records to the shard's next part.
func (s *fakeShard) emit(recs ...*storagev1.EgressRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.egress = append(s.mu.egress, recs...)
}

func (s *fakeShard) sent() []*shard.Part {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*shard.Part(nil), s.mu.sent...)
}

func (s *fakeShard) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.inbox.Ready():
		}
		for _, it := range s.inbox.Drain(nil) {
			if it.Barrier != 0 && it.Source == s.coord.Source() {
				s.coord.Part(s.snapshot(it.Barrier))
			}
		}
	}
}

func (s *fakeShard) snapshot(id uint64) *shard.Part {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := state.NewOverlay()
	for k, v := range s.mu.writes {
		o.Set([]byte(k), []byte(v))
	}
	o.Freeze()
	p := &shard.Part{ID: id, Shard: s.index, Overlay: o, Egress: s.mu.egress}
	s.mu.writes, s.mu.egress = map[string]string{}, nil
	s.mu.sent = append(s.mu.sent, p)
	return p
}

// fakeReader answers a barrier request at once with its sequence.
type fakeReader struct {
	name  string
	seq   atomic.Uint64
	coord *checkpoint.Coordinator
}

func (r *fakeReader) Name() string { return r.name }
func (r *fakeReader) RequestBarrier(id uint64) {
	r.coord.ReaderBarrier(id, r.name, r.seq.Load())
}

// fakePublisher records what it publishes. Its hooks, when set, run first
// and may fail the call.
type fakePublisher struct {
	onPublish func(ctx context.Context, recs []*storagev1.EgressRecord) error
	onFlush   func(ctx context.Context) error

	mu struct {
		sync.Mutex
		published []*storagev1.EgressRecord
		flushes   int
	}
}

func (p *fakePublisher) Publish(ctx context.Context, recs []*storagev1.EgressRecord) error {
	if p.onPublish != nil {
		if err := p.onPublish(ctx, recs); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.published = append(p.mu.published, recs...)
	return nil
}

func (p *fakePublisher) Flush(ctx context.Context) error {
	if p.onFlush != nil {
		if err := p.onFlush(ctx); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.flushes++
	return nil
}

func (p *fakePublisher) published() []*storagev1.EgressRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*storagev1.EgressRecord(nil), p.mu.published...)
}

// rig is a coordinator over fake shards and readers.
type rig struct {
	store     checkpoint.Store
	shards    []*fakeShard
	readers   []*fakeReader
	pub       *fakePublisher
	coord     *checkpoint.Coordinator
	completed chan *storagev1.Manifest // from OnComplete
}

func newRig(store checkpoint.Store, shards int, readers []string, pub *fakePublisher) *rig {
	r := &rig{store: store, pub: pub, completed: make(chan *storagev1.Manifest, 16)}
	cs := make([]checkpoint.Shard, shards)
	for i := range shards {
		s := &fakeShard{index: i, inbox: shard.NewInbox(), committed: make(chan committedPart, 16), store: store}
		s.mu.writes = map[string]string{}
		r.shards = append(r.shards, s)
		cs[i] = s
	}
	rs := make([]checkpoint.Reader, len(readers))
	for i, name := range readers {
		r.readers = append(r.readers, &fakeReader{name: name})
		rs[i] = r.readers[i]
	}
	cfg := checkpoint.Config{
		Interval:     time.Hour, // checkpoints only on demand
		DeploymentID: "dep",
		OnComplete:   func(m *storagev1.Manifest) { r.completed <- m },
	}
	r.coord = checkpoint.New(cfg, store, cs, rs, pub, checkpoint.NewMetrics(nil), quietLog)
	for _, s := range r.shards {
		s.coord = r.coord
	}
	for _, rd := range r.readers {
		rd.coord = r.coord
	}
	return r
}

// start runs the coordinator and the shards until the test ends.
func (r *rig) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.coord.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for _, s := range r.shards {
		wg.Go(func() { s.run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// checkpoint takes a checkpoint and returns its manifest, failing the test
// on an error.
func (r *rig) checkpoint(t *testing.T) *storagev1.Manifest {
	t.Helper()
	m, err := r.coord.Checkpoint(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func pendingData(t *testing.T, s checkpoint.Store) []string {
	t.Helper()
	recs, err := s.PendingEgress("", 0)
	if err != nil {
		t.Fatal(err)
	}
	return data(recs)
}

func data(recs []*storagev1.EgressRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.GetData())
	}
	return out
}

func get(t *testing.T, s *state.Store, key string) string {
	t.Helper()
	v, ok, err := state.NewView(s).Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "<none>"
	}
	return string(v)
}

func TestCheckpointCommitsPartsThenPublishes(t *testing.T) {
	store := memStore(t)
	pub := &fakePublisher{}
	r := newRig(store, 2, []string{"in"}, pub)
	// Publishing comes after the commit: the records are durable and
	// pending then.
	pub.onPublish = func(_ context.Context, recs []*storagev1.EgressRecord) error {
		m, _, err := store.LatestManifest()
		if err != nil {
			return err
		}
		if m.GetId() != 1 {
			t.Errorf("publishing before the checkpoint is durable: latest manifest %v", m)
		}
		if got := pendingData(t, store); strings.Join(got, " ") != strings.Join(data(recs), " ") {
			t.Errorf("publishing %v while the store holds %v pending", data(recs), got)
		}
		return nil
	}
	r.start(t)

	r.readers[0].seq.Store(17)
	r.shards[0].write("k0", "v0")
	r.shards[1].write("k1", "v1")
	r.shards[1].emit(records(1, 2)...)
	r.shards[0].emit(records(0, 11)...)
	m := r.checkpoint(t)

	if m.GetId() != 1 || m.GetShards() != 2 || m.GetReaderSequences()["in"] != 17 {
		t.Errorf("manifest %v, want checkpoint 1 of 2 shards with reader in at 17", m)
	}
	if get(t, store, "k0") != "v0" || get(t, store, "k1") != "v1" {
		t.Errorf("after the checkpoint k0 = %s, k1 = %s; want v0, v1", get(t, store, "k0"), get(t, store, "k1"))
	}
	mans, err := store.Manifests()
	if err != nil || len(mans) != 1 || mans[0].GetId() != 1 {
		t.Errorf("stored manifests %v, %v; want checkpoint 1", mans, err)
	}
	if latest, _ := r.coord.Latest(); latest.GetId() != 1 {
		t.Errorf("Latest = %v, want checkpoint 1", latest)
	}
	for _, s := range r.shards {
		c := receive(t, s.committed, fmt.Sprintf("shard %d to be told its part is durable", s.index))
		if sent := s.sent(); len(sent) != 1 || c.part != sent[0] {
			t.Errorf("shard %d was told of part %p, sent %v", s.index, c.part, sent)
		}
		if c.latest != 1 {
			t.Errorf("shard %d was told before the commit: latest manifest then %d", s.index, c.latest)
		}
	}
	// Shard 0's records first, each shard's in the order it wrote them.
	want := append(data(records(0, 11)), data(records(1, 2))...)
	if got := data(pub.published()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("published %v, want %v", got, want)
	}
	for i, rec := range pub.published() {
		if !strings.HasPrefix(rec.GetMsgId(), "dep-00000000000000000001-") {
			t.Errorf("record %d published with message id %q", i, rec.GetMsgId())
		}
	}
	if got := pendingData(t, store); len(got) != 0 {
		t.Errorf("published records still pending: %v", got)
	}
	if done := receive(t, r.completed, "OnComplete"); done.GetId() != 1 {
		t.Errorf("OnComplete with %v, want checkpoint 1", done)
	}

	// The next checkpoint follows, and readers that did not move keep
	// their sequence.
	r.shards[1].write("k1", "v1b")
	m = r.checkpoint(t)
	if m.GetId() != 2 || m.GetReaderSequences()["in"] != 17 || get(t, store, "k1") != "v1b" {
		t.Errorf("second checkpoint %v with k1 = %s; want 2, reader in at 17, v1b", m, get(t, store, "k1"))
	}
}

// At-least-once egress that the parts' effects produced must be stored in
// JetStream before the parts are: the coordinator waits for Flush.
func TestCheckpointWaitsForAtLeastOnceEgressBeforeCommitting(t *testing.T) {
	store := memStore(t)
	flushing, release := make(chan struct{}), make(chan struct{})
	pub := &fakePublisher{onFlush: func(ctx context.Context) error {
		select {
		case flushing <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	r := newRig(store, 2, nil, pub)
	r.start(t)
	r.shards[0].write("k", "v")
	r.shards[0].emit(records(0, 1)...)

	done := make(chan *storagev1.Manifest, 1)
	ctx := testContext(t)
	go func() {
		m, err := r.coord.Checkpoint(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- m
	}()
	receive(t, flushing, "Flush")
	// Flush started after every part came, and holds the commit back.
	if got := len(r.shards[0].sent()) + len(r.shards[1].sent()); got != 2 {
		t.Errorf("Flush with %d parts sent, want 2", got)
	}
	if m, _, err := store.LatestManifest(); m != nil || err != nil {
		t.Errorf("checkpoint committed while Flush waits: %v, %v", m, err)
	}
	if v := get(t, store, "k"); v != "<none>" {
		t.Errorf("k = %s while Flush waits, want nothing", v)
	}
	if n := len(pub.published()); n != 0 {
		t.Errorf("%d records published while Flush waits", n)
	}
	close(release)
	if m := receive(t, done, "the checkpoint"); m.GetId() != 1 || get(t, store, "k") != "v" {
		t.Errorf("after Flush: manifest %v, k = %s; want checkpoint 1 and v", m, get(t, store, "k"))
	}
	if n := len(pub.published()); n != 1 {
		t.Errorf("%d records published, want 1", n)
	}
}

func TestCheckpointFailsWhenFlushFails(t *testing.T) {
	store := memStore(t)
	flushErr := errors.New("publisher closed")
	pub := &fakePublisher{onFlush: func(context.Context) error { return flushErr }}
	r := newRig(store, 1, nil, pub)
	r.start(t)
	r.shards[0].write("k", "v")
	_, err := r.coord.Checkpoint(testContext(t))
	if !errors.Is(err, flushErr) || !strings.Contains(err.Error(), "at-least-once egress") {
		t.Fatalf("Checkpoint = %v, want an error about waiting for at-least-once egress wrapping %v", err, flushErr)
	}
	if m, _, _ := store.LatestManifest(); m != nil || get(t, store, "k") != "<none>" {
		t.Errorf("committed although Flush failed: manifest %v, k = %s", m, get(t, store, "k"))
	}
	if latest, inProgress := r.coord.Latest(); latest != nil || inProgress != 0 {
		t.Errorf("Latest = %v, %d after a failed checkpoint; want none and none in progress", latest, inProgress)
	}
}

func TestPublishFailureLeavesEgressPendingForTheNextCheckpoint(t *testing.T) {
	store := memStore(t)
	var failing atomic.Bool
	pub := &fakePublisher{onPublish: func(context.Context, []*storagev1.EgressRecord) error {
		if failing.Load() {
			return errors.New("no JetStream")
		}
		return nil
	}}
	r := newRig(store, 2, nil, pub)
	r.start(t)

	failing.Store(true)
	r.shards[1].emit(records(1, 2)...)
	r.shards[0].emit(records(0, 1)...)
	m, err := r.coord.Checkpoint(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "publishing 3 egress records: no JetStream") {
		t.Fatalf("Checkpoint = %v, want an error saying publishing 3 records failed", err)
	}
	// The checkpoint itself is complete.
	if m.GetId() != 1 {
		t.Errorf("manifest %v, want checkpoint 1", m)
	}
	if latest, _ := r.coord.Latest(); latest.GetId() != 1 {
		t.Errorf("Latest = %v, want checkpoint 1", latest)
	}
	want := []string{"s0-0", "s1-0", "s1-1"}
	if got := pendingData(t, store); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("pending %v, want %v", got, want)
	}
	select {
	case m := <-r.completed:
		t.Errorf("OnComplete(%v) although its egress was not published", m)
	default:
	}

	failing.Store(false)
	r.shards[0].emit(records(0, 2)[1])
	if m := r.checkpoint(t); m.GetId() != 2 {
		t.Errorf("manifest %v, want checkpoint 2", m)
	}
	// The earlier checkpoint's records first.
	want = append(want, "s0-1")
	if got := data(pub.published()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("published %v, want %v", got, want)
	}
	if got := pendingData(t, store); len(got) != 0 {
		t.Errorf("still pending: %v", got)
	}
}

// A crash after a checkpoint is durable and before its egress is published
// leaves the records in the store; the next start publishes them, with the
// same message ids, before anything else.
func TestRecoverPublishesWhatACrashLeftPending(t *testing.T) {
	fs := vfs.NewCrashableMem()
	store := openStore(t, fs)
	publishing, hold := make(chan []*storagev1.EgressRecord, 1), make(chan struct{})
	t.Cleanup(func() { close(hold) })
	pub := &fakePublisher{onPublish: func(ctx context.Context, recs []*storagev1.EgressRecord) error {
		select {
		case publishing <- recs:
		case <-ctx.Done():
		}
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return errors.New("crashed")
	}}
	r := newRig(store, 2, []string{"in"}, pub)
	r.start(t)
	r.readers[0].seq.Store(9)
	r.shards[0].write("k", "v")
	r.shards[0].emit(records(0, 2)...)
	r.shards[1].emit(records(1, 1)...)
	go func() { _, _ = r.coord.Checkpoint(context.Background()) }()
	inFlight := receive(t, publishing, "the first publish")

	// The crash: what was synced survives.
	crashed := openStore(t, fs.CrashClone(vfs.CrashCloneCfg{}))
	pub2 := &fakePublisher{}
	r2 := newRig(crashed, 2, []string{"in"}, pub2)
	if latest, _ := r2.coord.Latest(); latest != nil {
		t.Fatalf("Latest before Recover = %v", latest)
	}
	if err := r2.coord.Recover(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if latest, _ := r2.coord.Latest(); latest.GetId() != 1 || latest.GetReaderSequences()["in"] != 9 {
		t.Errorf("Latest after Recover = %v, want checkpoint 1 with reader in at 9", latest)
	}
	got := pub2.published()
	if len(got) != len(inFlight) {
		t.Fatalf("Recover published %v, want %v", data(got), data(inFlight))
	}
	for i := range got {
		if got[i].GetMsgId() != inFlight[i].GetMsgId() || string(got[i].GetData()) != string(inFlight[i].GetData()) {
			t.Errorf("record %d published as %s %q, before the crash as %s %q", i,
				got[i].GetMsgId(), got[i].GetData(), inFlight[i].GetMsgId(), inFlight[i].GetData())
		}
	}
	if p := pendingData(t, crashed); len(p) != 0 {
		t.Errorf("still pending after Recover: %v", p)
	}
	if v := get(t, crashed, "k"); v != "v" {
		t.Errorf("k = %s after the crash, want v", v)
	}

	// The next checkpoint follows the recovered one, and a reader that
	// did not move keeps its sequence.
	r2.start(t)
	r2.readers[0].seq.Store(9)
	if m := r2.checkpoint(t); m.GetId() != 2 || m.GetReaderSequences()["in"] != 9 {
		t.Errorf("checkpoint after Recover: %v, want 2 with reader in at 9", m)
	}
}
