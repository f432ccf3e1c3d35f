package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/egress"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

// testLog shows warnings and errors of the code under test.
var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

const (
	sourceStream = "TWINFLOW_IN" // the direct ingress, as the engine names it
	testK        = 8
	waitLimit    = time.Minute
	trimOften    = 50 * time.Millisecond
)

// TestOnOneCluster runs the routing stage's tests on one three-server NATS
// cluster, one after the other: each uses the direct ingress's subjects,
// which only one stream can hold.
func TestOnOneCluster(t *testing.T) {
	nats3 := clustertest.Start(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, *rig)
	}{
		{"OldRouterIsFenced", testOldRouterIsFenced},
		{"SourceIsTrimmed", testSourceIsTrimmed},
		{"WorkerReadsOnlyItsKeyGroups", testWorkerReadsOnlyItsKeyGroups},
		{"TooLargeIsDeadLettered", testTooLargeIsDeadLettered},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, newRig(t, nats3, tc.name)) })
	}
}

// rig is a cluster of testK key groups with the direct ingress stream.
type rig struct {
	js   jetstream.JetStream
	nc   *nats.Conn
	cl   *cluster.Cluster
	src  jetstream.Stream
	rt   *router.Router
	pub  *natsbus.Publisher
	sent int
}

func newRig(t *testing.T, nats3 *clustertest.Cluster, name string) *rig {
	nc, js := nats3.Connect(t)
	ctx := testContext(t)
	cl, err := cluster.Open(ctx, js, cluster.Config{Name: name, KeyGroups: testK, MemberTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	src, err := natsbus.EnsureStream(ctx, js, natsbus.StreamSpec{Name: sourceStream, Subjects: router.DirectStreamSubjects, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), sourceStream) })
	rt, err := router.New(nil, router.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{js: js, nc: nc, cl: cl, src: src, rt: rt, pub: natsbus.NewPublisher(js, natsbus.PublisherOptions{Logger: testLog})}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// publish sends n messages to the direct ingress: message i to address
// "a<i>" with payload "<i>".
func (r *rig) publish(t *testing.T, n int) {
	t.Helper()
	recs := make([]natsbus.Record, n)
	for i := range recs {
		id := strconv.Itoa(r.sent + i)
		subject, err := router.DirectSubject("test/fn", "a"+id)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = natsbus.Record{Subject: subject, Header: nats.Header{router.TypenameHeader: {"test/count"}}, Data: []byte(id)}
	}
	if err := r.pub.Publish(testContext(t), recs); err != nil {
		t.Fatal(err)
	}
	r.sent += n
}

// running is a stage running in a goroutine.
type running struct {
	s      *Stage
	m      *Metrics
	done   chan error
	cancel context.CancelFunc
}

// start runs a router of epoch that trims the source stream every trim.
func (r *rig) start(t *testing.T, epoch uint64, trim time.Duration) *running {
	m := NewMetrics(nil)
	s := New(Config{Cluster: r.cl, JS: r.js, Sources: []Source{{Stream: sourceStream, Ingress: router.DirectIngress}}, Router: r.rt,
		Holder: fmt.Sprintf("w%d/1", epoch), Epoch: epoch, DLQ: egress.NewPublisher(r.nc, r.js, testLog), Metrics: m, Log: testLog,
		TrimEvery: trim})
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{s: s, m: m, done: make(chan error, 1), cancel: cancel}
	go func() { run.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-run.done
	})
	return run
}

// routed reads the whole partitioned ingress and counts, by payload, the
// routed messages; it fails the test for a message on a key group's
// subject that is not that key group's.
func (r *rig) routed(t *testing.T) (count map[string]int, markers int) {
	t.Helper()
	ctx := testContext(t)
	info, err := r.js.Stream(ctx, r.cl.InStream())
	if err != nil {
		t.Fatal(err)
	}
	last := info.CachedInfo().State.LastSeq
	count = map[string]int{}
	if last == 0 {
		return count, 0
	}
	bus, err := natsbus.NewReader(ctx, r.js, r.cl.InStream(), 0, natsbus.ReaderOptions{Logger: testLog})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	prefix := strings.TrimSuffix(r.cl.InSubject(-1), "*")
	for seq := uint64(0); seq < last; {
		msgs, err := bus.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			seq = m.Seq
			if m.Header.Get(hdrKind) == kindMarker {
				markers++
				continue
			}
			kg, _ := strconv.Atoi(strings.TrimPrefix(m.Subject, prefix))
			envs, err := decodeItems(m.Data)
			if err != nil {
				t.Fatalf("message %d: %v", m.Seq, err)
			}
			for _, env := range envs {
				if got := keygroup.Of(env.Target.ID, testK); got != kg {
					t.Fatalf("message %d on %s holds %s of key group %d", m.Seq, m.Subject, env.Target, got)
				}
				count[string(env.Payload)]++
			}
		}
	}
	return count, markers
}

// exactlyOnce reports how the routed messages differ from each of the
// r.sent published ones once.
func (r *rig) exactlyOnce(count map[string]int) error {
	var bad []string
	for i := range r.sent {
		if n := count[strconv.Itoa(i)]; n != 1 {
			bad = append(bad, fmt.Sprintf("%d routed %d times", i, n))
		}
	}
	if len(count) != r.sent {
		bad = append(bad, fmt.Sprintf("%d distinct messages routed, %d published", len(count), r.sent))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d differences from exactly once: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
	}
	return nil
}

// waitRouted waits until every published message is routed exactly once.
func (r *rig) waitRouted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		count, _ := r.routed(t)
		err := r.exactlyOnce(count)
		if err == nil {
			return
		}
		total := 0
		for _, n := range count {
			total += n
		}
		if total > r.sent || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testOldRouterIsFenced runs two routers of different epochs over the same
// partitioned ingress: after the newer one took over, the older one's next
// write is refused and it stops; every message is routed exactly once.
func testOldRouterIsFenced(t *testing.T, r *rig) {
	// Without trimming, the newer router reads again what the old one
	// routed, and must skip it.
	const noTrim = time.Hour
	old := r.start(t, 1, noTrim)
	r.publish(t, 300)
	r.waitRouted(t)

	newer := r.start(t, 2, noTrim)
	// The newer router took over once every subject ends in its marker or
	// what it wrote after it.
	deadline := time.Now().Add(waitLimit)
	for kg := 0; kg < testK; {
		m, err := r.cl.LastIn(testContext(t), kg)
		if err != nil {
			t.Fatal(err)
		}
		if m != nil && m.Header.Get(hdrEpoch) == "2" {
			kg++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("key group %d: no epoch marker of the newer router after %v", kg, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Both read what comes now; the old router's write is refused.
	r.publish(t, 300)
	select {
	case err := <-old.done:
		var fenced *FencedError
		if !errors.As(err, &fenced) || fenced.ByEpoch != 2 {
			t.Fatalf("the old router stopped with %v, want fenced by epoch 2", err)
		}
		old.done <- err // for the cleanup
	case <-time.After(waitLimit):
		t.Fatalf("the old router still runs %v after the newer one took over", waitLimit)
	}
	r.waitRouted(t)
	r.publish(t, 100)
	r.waitRouted(t)
	select {
	case err := <-newer.done:
		t.Fatalf("the newer router stopped: %v", err)
	default:
	}
}

// testSourceIsTrimmed checks that the router purges the source stream below
// what it routed, and nothing it had not: a router that takes over after
// the purge routes the rest exactly once.
func testSourceIsTrimmed(t *testing.T, r *rig) {
	first := r.start(t, 1, trimOften)
	for range 3 {
		r.publish(t, 200)
	}
	r.waitRouted(t)
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := r.src.Info(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 && info.State.FirstSeq == uint64(r.sent)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source stream holds %d messages from %d after all %d were routed", info.State.Msgs, info.State.FirstSeq, r.sent)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.cancel()
	<-first.done
	first.done <- nil
	// Published while no router runs: the next one starts after what its
	// predecessor routed, which is purged.
	r.publish(t, 200)
	r.start(t, 2, trimOften)
	r.waitRouted(t)
}

// testWorkerReadsOnlyItsKeyGroups reads the partitioned ingress as a worker
// does (Filter, Decoder): the consumer delivers only the owned key groups'
// subjects, and the decoder keeps only what is past each key group's
// position.
func testWorkerReadsOnlyItsKeyGroups(t *testing.T, r *rig) {
	r.start(t, 1, trimOften)
	r.publish(t, 400)
	r.waitRouted(t)
	owned := []int{1, 4, 6}
	// Key group 4 has processed its first routed message already.
	first, err := r.firstRouted(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]bool{}
	envs, _ := decodeItems(first.Data)
	for _, env := range envs {
		skipped[string(env.Payload)] = true
	}
	pos := map[int]uint64{4: first.Sequence}
	ctx := testContext(t)
	// The consumer reads up to the last message of the owned subjects.
	var last uint64
	for _, kg := range owned {
		m, err := r.cl.LastIn(ctx, kg)
		if err != nil || m == nil {
			t.Fatalf("key group %d: no last message: %v", kg, err)
		}
		last = max(last, m.Sequence)
	}
	bus, err := natsbus.NewReader(ctx, r.js, r.cl.InStream(), 0, natsbus.ReaderOptions{Logger: testLog, FilterSubjects: Filter(r.cl, owned)})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	dec := &Decoder{K: testK, Prefix: strings.TrimSuffix(r.cl.InSubject(-1), "*"), Log: testLog,
		Accept: func(kg int, seq uint64) bool { return (kg == 1 || kg == 4 || kg == 6) && seq > pos[kg] }}
	subjects := map[string]int{}
	got := map[string]int{}
	var f ingress.Faults
	for seq := uint64(0); seq < last; {
		msgs, err := bus.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range msgs {
			seq = msgs[i].Seq
			subjects[msgs[i].Subject]++
			dec.Decode(&msgs[i], func(env shard.Envelope) { got[string(env.Payload)]++ }, &f)
		}
	}
	for s := range subjects {
		if s != r.cl.InSubject(1) && s != r.cl.InSubject(4) && s != r.cl.InSubject(6) {
			t.Errorf("the consumer delivered messages of %s, a key group not owned", s)
		}
	}
	want := 0
	for i := range r.sent {
		id := strconv.Itoa(i)
		kg := keygroup.Of("a"+id, testK)
		if (kg == 1 || kg == 4 || kg == 6) && !skipped[id] {
			want++
			if got[id] != 1 {
				t.Errorf("message %s of key group %d delivered %d times", id, kg, got[id])
			}
		} else if got[id] != 0 {
			t.Errorf("message %s of key group %d delivered %d times, want none (skipped %v)", id, kg, got[id], skipped[id])
		}
	}
	if len(skipped) == 0 || len(got) != want {
		t.Errorf("%d messages delivered, want %d (%d skipped by key group 4's position)", len(got), want, len(skipped))
	}
}

// firstRouted returns the first routed message of key group kg.
func (r *rig) firstRouted(t *testing.T, kg int) (*jetstream.RawStreamMsg, error) {
	ctx := testContext(t)
	st, err := r.js.Stream(ctx, r.cl.InStream())
	if err != nil {
		return nil, err
	}
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			return nil, err
		}
		if m.Subject == r.cl.InSubject(kg) && m.Header.Get(hdrKind) == kindRouted {
			return m, nil
		}
	}
}

// testTooLargeIsDeadLettered publishes a message that fits the source
// stream but not a routed message: it is dead-lettered with a reason, and
// routing goes on.
func testTooLargeIsDeadLettered(t *testing.T, r *rig) {
	ctx := testContext(t)
	dlq, err := natsbus.EnsureStream(ctx, r.js, natsbus.StreamSpec{Name: "TWINFLOW_DLQ", Subjects: []string{router.DeadLetterSubjects}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.js.DeleteStream(context.Background(), "TWINFLOW_DLQ") })
	r.start(t, 1, trimOften)
	r.publish(t, 10)
	subject, err := router.DirectSubject("test/fn", "large")
	if err != nil {
		t.Fatal(err)
	}
	big := nats.NewMsg(subject)
	big.Header.Set(router.TypenameHeader, "test/count")
	big.Data = make([]byte, int(r.nc.MaxPayload())-routedOverhead/2)
	if _, err := r.js.PublishMsg(ctx, big); err != nil {
		t.Fatal(err)
	}
	r.publish(t, 10)
	r.waitRouted(t)
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 1 {
			break
		}
		if info.State.Msgs > 1 || time.Now().After(deadline) {
			t.Fatalf("%d dead letters, want the one of the message too large to route", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m, err := dlq.GetLastMsgForSubject(ctx, router.DeadLetterSubject)
	if err != nil {
		t.Fatal(err)
	}
	if reason := m.Header.Get(router.ErrorHeader); !strings.Contains(reason, "does not fit the partitioned ingress") {
		t.Errorf("the dead letter says %q, want why the message was not routed", reason)
	}
}
