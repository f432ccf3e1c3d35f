package checkpoint_test

import (
	"errors"
	"testing"

	"github.com/twinflow/twinflow/runtime/state"
)

// gatedStore is a real store whose commits the test lets through one at a
// time, failing those it says. Pebble itself cannot be made to fail a
// commit and go on: it treats a failed write or sync of its log as fatal.
type gatedStore struct {
	*state.Store
	attempts chan struct{} // an attempt to commit started
	outcome  chan error    // what it returns; nil commits
	stop     chan struct{} // closed when the test ends
}

func (s *gatedStore) Commit(overlays []*state.Overlay, meta *state.Overlay) (int64, error) {
	var err error
	select {
	case s.attempts <- struct{}{}:
		err = <-s.outcome
	case <-s.stop:
		err = errors.New("test ended")
	}
	if err != nil {
		return 0, err
	}
	return s.Store.Commit(overlays, meta)
}

func TestFailedCommitIsRetriedAndReported(t *testing.T) {
	store := &gatedStore{Store: memStore(t), attempts: make(chan struct{}), outcome: make(chan error), stop: make(chan struct{})}
	r := newRig(store, 2, nil, &fakePublisher{})
	r.start(t)
	t.Cleanup(func() { close(store.stop) })
	r.shards[0].write("k", "v")
	r.shards[1].emit(records(1, 1)...)
	done := make(chan error, 1)
	ctx := testContext(t)
	go func() {
		_, err := r.coord.Checkpoint(ctx)
		done <- err
	}()

	if err, _ := r.coord.CommitError(); err != nil {
		t.Fatalf("CommitError before any commit: %v", err)
	}
	diskFull := errors.New("no space left on device")
	receive(t, store.attempts, "the first commit")
	store.outcome <- diskFull
	receive(t, store.attempts, "the commit to be retried")
	err, since := r.coord.CommitError()
	if !errors.Is(err, diskFull) || since.IsZero() {
		t.Fatalf("CommitError while commits fail = %v since %v, want %v and when it began", err, since, diskFull)
	}
	if m, _, _ := store.LatestManifest(); m != nil {
		t.Fatalf("manifest %v stored although the commit failed", m)
	}

	store.outcome <- errors.New("still no space")
	receive(t, store.attempts, "the third commit")
	if err2, since2 := r.coord.CommitError(); !errors.Is(err2, diskFull) || !since2.Equal(since) {
		t.Errorf("CommitError after the second failure = %v since %v, want the first failure's %v since %v", err2, since2, diskFull, since)
	}
	store.outcome <- nil
	if err := receive(t, done, "the checkpoint"); err != nil {
		t.Fatal(err)
	}
	if err, _ := r.coord.CommitError(); err != nil {
		t.Errorf("CommitError after a commit succeeded: %v", err)
	}
	if m, _, _ := store.LatestManifest(); m.GetId() != 1 || get(t, store.Store, "k") != "v" {
		t.Errorf("after the retried commit: manifest %v, k = %s; want checkpoint 1 and v", m, get(t, store.Store, "k"))
	}
	if got := data(r.pub.published()); len(got) != 1 {
		t.Errorf("published %v, want the one record", got)
	}
}
