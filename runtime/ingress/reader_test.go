package ingress_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/twinflow/twinflow/internal/testwait"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/shard"
)

const (
	stream = "IN"
	source = 2 // the reader's barrier source number: after the two shards
	// waitLimit bounds every wait: reaching it means the reader is stuck,
	// never that it was slow.
	waitLimit = 15 * time.Second
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// owner places ids on the two shards.
var owner = map[string]int{"a": 0, "b": 1, "c": 1}

// fakeShards are two inboxes the test reads, with a saturation switch each.
type fakeShards struct {
	inboxes   [2]*shard.Inbox
	saturated [2]atomic.Bool
	// whileQueued makes a shard saturated while its inbox holds messages.
	whileQueued [2]atomic.Bool
	taken       [2][]shard.Item // drained, not yet looked at
	last        [2]uint64       // the last barrier looked at
}

func (s *fakeShards) Locate(id string) int     { return owner[id] }
func (s *fakeShards) Inbox(i int) *shard.Inbox { return s.inboxes[i] }
func (s *fakeShards) Saturated(i int) bool {
	return s.saturated[i].Load() || s.whileQueued[i].Load() && s.inboxes[i].Len() > 0
}
func (s *fakeShards) Count() int { return len(s.inboxes) }

// upTo returns the messages of a shard's inbox up to barrier id since the
// last call, and checks that the barriers in between are the reader's, in
// order.
func (s *fakeShards) upTo(t *testing.T, sh int, id uint64) []shard.Item {
	t.Helper()
	deadline := time.After(waitLimit)
	var msgs []shard.Item
	for {
		for len(s.taken[sh]) > 0 {
			it := s.taken[sh][0]
			s.taken[sh] = s.taken[sh][1:]
			if it.Barrier == 0 {
				msgs = append(msgs, it)
				continue
			}
			if it.Source != source || it.Barrier <= s.last[sh] || it.Barrier > id {
				t.Fatalf("shard %d: barrier %d from source %d after barrier %d; want barriers from %d, in order, up to %d",
					sh, it.Barrier, it.Source, s.last[sh], source, id)
			}
			s.last[sh] = it.Barrier
			if it.Barrier == id {
				return msgs
			}
		}
		select {
		case <-s.inboxes[sh].Ready():
			s.taken[sh] = append(s.taken[sh], s.inboxes[sh].Drain(nil)...)
		case <-deadline:
			t.Fatalf("shard %d: no barrier %d after %v", sh, id, waitLimit)
		}
	}
}

type barrier struct {
	id   uint64
	name string
	seq  uint64
}

type barriers chan barrier

func (b barriers) ReaderBarrier(id uint64, name string, seq uint64) { b <- barrier{id, name, seq} }

// deadLetters records what the reader dead-letters and answers.
type deadLetters struct {
	mu struct {
		sync.Mutex
		published []*storagev1.EgressRecord
		replies   []*storagev1.EgressRecord
	}
}

func (d *deadLetters) Publish(_ context.Context, recs []*storagev1.EgressRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.published = append(d.mu.published, recs...)
	return nil
}

func (d *deadLetters) Reply(rec *storagev1.EgressRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.replies = append(d.mu.replies, rec)
}

func (d *deadLetters) get() (published, replies []*storagev1.EgressRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append(published, d.mu.published...), append(replies, d.mu.replies...)
}

// rig is a NATS server with the stream, and what a reader delivers to.
type rig struct {
	js       jetstream.JetStream
	shards   *fakeShards
	barriers barriers
	dlq      *deadLetters
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv, err := natsbus.StartServer(natsbus.ServerOptions{NoAuth: true, Dir: t.TempDir(), Port: -1, SyncInterval: time.Minute, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := natsbus.Connect(natsbus.ConnOptions{URL: srv.ClientURL(), Name: t.Name(), Logger: quietLog, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := &rig{js: js, shards: &fakeShards{}, barriers: make(barriers, 16), dlq: &deadLetters{}}
	r.shards.inboxes = [2]*shard.Inbox{shard.NewInbox(), shard.NewInbox()}
	r.ensureStream(t)
	return r
}

func (r *rig) ensureStream(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	spec := natsbus.StreamSpec{Name: stream, Subjects: router.DirectStreamSubjects}
	if _, err := natsbus.EnsureStream(ctx, r.js, spec); err != nil {
		t.Fatal(err)
	}
}

// reader returns a reader of the stream on the direct ingress that starts
// after startAfter; run starts it.
func (r *rig) reader(t *testing.T, startAfter uint64) *ingress.Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	bus, err := natsbus.NewReader(ctx, r.js, stream, startAfter, natsbus.ReaderOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	rt, err := router.New(nil, router.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return ingress.New(ingress.Config{Name: stream, Source: source},
		bus, startAfter, &ingress.StreamDecoder{Stream: stream, Ingress: router.DirectIngress, Router: rt}, r.shards, r.barriers, r.dlq, ingress.NewMetrics(nil), quietLog)
}

// run runs rd until the test ends.
func run(t *testing.T, rd *ingress.Reader) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rd.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// barrier asks rd for barrier id and returns the sequence it reports.
func (r *rig) barrier(t *testing.T, rd *ingress.Reader, id uint64) uint64 {
	t.Helper()
	rd.RequestBarrier(id)
	select {
	case b := <-r.barriers:
		if b.id != id || b.name != stream {
			t.Fatalf("barrier %d of %s reported, want %d of %s", b.id, b.name, id, stream)
		}
		return b.seq
	case <-time.After(waitLimit):
		t.Fatalf("barrier %d not reported after %v", id, waitLimit)
		return 0
	}
}

// msg is a message to publish to the stream.
type msg struct {
	subject string
	header  nats.Header
	data    string
}

// direct is a message to function ns/fn at id with typename ns/t.
func direct(id, data string) msg {
	return msg{subject: "twinflow.in.ns.fn." + id, header: nats.Header{router.TypenameHeader: {"ns/t"}}, data: data}
}

func (r *rig) publish(t *testing.T, msgs ...msg) []*jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	acks := make([]*jetstream.PubAck, len(msgs))
	for i, m := range msgs {
		ack, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: m.subject, Header: m.header, Data: []byte(m.data)})
		if err != nil {
			t.Fatal(err)
		}
		acks[i] = ack
	}
	return acks
}

// payloads returns the payloads of the messages among items, and fails on
// a barrier.
func payloads(t *testing.T, items []shard.Item) []string {
	t.Helper()
	out := make([]string, len(items))
	for i, it := range items {
		if it.Barrier != 0 {
			t.Fatalf("barrier %d among the messages", it.Barrier)
		}
		out[i] = string(it.Msg.Payload)
	}
	return out
}

func TestReaderRoutesInStreamOrder(t *testing.T) {
	r := newRig(t)
	var msgs []msg
	for i := 1; i <= 12; i++ {
		m := direct([]string{"a", "b", "c"}[i%3], "m"+strconv.Itoa(i))
		if i%4 == 0 {
			m.header.Set(router.ReplyToHeader, "_INBOX.r"+strconv.Itoa(i))
		}
		msgs = append(msgs, m)
	}
	r.publish(t, msgs...)
	rd := r.reader(t, 0)
	run(t, rd)
	id := r.barrierAt(t, rd, 0, 12)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := r.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	want := [2][]string{}
	for _, m := range msgs {
		id := m.subject[strings.LastIndexByte(m.subject, '.')+1:]
		want[owner[id]] = append(want[owner[id]], m.data)
	}
	for sh := range 2 {
		items := r.shards.upTo(t, sh, id)
		if got := payloads(t, items); strings.Join(got, " ") != strings.Join(want[sh], " ") {
			t.Errorf("shard %d got %v, want %v in stream order", sh, got, want[sh])
		}
		for _, it := range items {
			e := it.Msg
			seq, _ := strconv.ParseUint(strings.TrimPrefix(string(e.Payload), "m"), 10, 64)
			m := msgs[seq-1]
			stored, err := st.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			wantTarget := shard.Address{Type: "ns/fn", ID: m.subject[strings.LastIndexByte(m.subject, '.')+1:]}
			if it.Source != source || e.Target != wantTarget || e.Typename != "ns/t" ||
				e.ReplyTo != m.header.Get(router.ReplyToHeader) || e.Published != stored.Time.UnixNano() {
				t.Errorf("message %d delivered as %+v from source %d; want source %d, target %v, typename ns/t, reply to %q, published %d",
					seq, e, it.Source, source, wantTarget, m.header.Get(router.ReplyToHeader), stored.Time.UnixNano())
			}
		}
	}
	if dead, replies := r.dlq.get(); len(dead) != 0 || len(replies) != 0 {
		t.Errorf("dead letters %v and answers %v, want none", dead, replies)
	}
}

func TestReaderDeadLettersWhatItCannotRoute(t *testing.T) {
	r := newRig(t)
	noTypename := msg{subject: "twinflow.in.ns.fn.a", header: nats.Header{"X-Trace": {"t2"}}, data: "no typename"}
	noID := direct("", "no id")
	noID.subject = "twinflow.in.ns.fn"
	noID.header.Set(router.ReplyToHeader, "_INBOX.q3")
	badReply := direct("a", "bad reply")
	badReply.header.Set(router.ReplyToHeader, "twinflow.in.ns.fn.b")
	r.publish(t, direct("a", "first"), noTypename, noID, badReply, direct("b", "last"))
	rd := r.reader(t, 0)
	run(t, rd)
	checkPayloads(t, r, r.barrierAt(t, rd, 0, 5), "first", "last")

	dead, replies := r.dlq.get()
	want := []struct {
		seq    int
		m      msg
		reason router.Reason
	}{
		{2, noTypename, router.ReasonMissingTypename},
		{3, noID, router.ReasonMissingID},
		{4, badReply, router.ReasonBadReplyTo},
	}
	if len(dead) != len(want) {
		t.Fatalf("dead letters %v, want %d", dead, len(want))
	}
	for i, w := range want {
		d := dead[i]
		h := d.GetHeaders()
		if d.GetMsgId() != fmt.Sprintf("ingress-%s-%d", stream, w.seq) || d.GetSubject() != router.DeadLetterSubject ||
			string(d.GetData()) != w.m.data || h[router.ErrorReasonHeader] != string(w.reason) ||
			h[router.OriginalSubjectHeader] != w.m.subject || h[router.ErrorHeader] == "" {
			t.Errorf("dead letter %d = %v; want id ingress-%s-%d on %s with data %q, reason %s, original subject %s and the error",
				i, d, stream, w.seq, router.DeadLetterSubject, w.m.data, w.reason, w.m.subject)
		}
	}
	if h := dead[0].GetHeaders(); h["X-Trace"] != "t2" {
		t.Errorf("dead letter headers %v lost the message's X-Trace", h)
	}
	// The request is answered at once; the one whose reply subject may not
	// be answered is not.
	if len(replies) != 1 {
		t.Fatalf("answers %v, want one to _INBOX.q3", replies)
	}
	a, h := replies[0], dead[1].GetHeaders()
	if a.GetSubject() != "_INBOX.q3" || len(a.GetData()) != 0 || a.GetHeaders()[router.ErrorHeader] != h[router.ErrorHeader] ||
		a.GetHeaders()[router.ErrorReasonHeader] != string(router.ReasonMissingID) || a.GetHeaders()[router.OriginalSubjectHeader] != noID.subject {
		t.Errorf("answer %v, want an empty one to _INBOX.q3 with the dead letter's error headers %v", a, h)
	}
}

// barrierAt requests barriers after id until one reports sequence want,
// which the reader reaches in its own time, and returns that barrier's id.
func (r *rig) barrierAt(t *testing.T, rd *ingress.Reader, id, want uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		id++
		seq := r.barrier(t, rd, id)
		if seq == want {
			return id
		}
		if seq > want || time.Now().After(deadline) {
			t.Fatalf("barrier %d reports sequence %d, want %d", id, seq, want)
		}
	}
}

func checkPayloads(t *testing.T, r *rig, id uint64, want0, want1 string) {
	t.Helper()
	for sh, want := range []string{want0, want1} {
		if got := strings.Join(payloads(t, r.shards.upTo(t, sh, id)), " "); got != want {
			t.Errorf("shard %d got [%s] before barrier %d, want [%s]", sh, got, id, want)
		}
	}
}

// While a shard is saturated the reader takes nothing from the stream, and
// it still emits barriers.
func TestReaderWaitsWhileAShardIsSaturated(t *testing.T) {
	r := newRig(t)
	rd := r.reader(t, 0)
	run(t, rd)
	r.publish(t, direct("a", "m1"), direct("b", "m2"))
	id := r.barrierAt(t, rd, 0, 2)
	checkPayloads(t, r, id, "m1", "m2")

	r.shards.saturated[1].Store(true)
	// The reader emits a barrier requested after the switch at the top of
	// its loop, and then sees the switch.
	id++
	r.barrier(t, rd, id)
	r.publish(t, direct("a", "m3"), direct("c", "m4"))
	for range 2 {
		id++
		if seq := r.barrier(t, rd, id); seq != 2 {
			t.Errorf("barrier %d while shard 1 is saturated reports sequence %d, want 2", id, seq)
		}
	}
	checkPayloads(t, r, id, "", "")

	r.shards.saturated[1].Store(false)
	id = r.barrierAt(t, rd, id, 4)
	checkPayloads(t, r, id, "m3", "m4")
}

// Pause stops intake for good; barriers still go out, so that the final
// checkpoint completes.
func TestReaderPauseStopsIntakeButNotBarriers(t *testing.T) {
	r := newRig(t)
	rd := r.reader(t, 0)
	run(t, rd)
	r.publish(t, direct("a", "m1"), direct("b", "m2"))
	id := r.barrierAt(t, rd, 0, 2)
	checkPayloads(t, r, id, "m1", "m2")

	rd.Pause()
	id++
	r.barrier(t, rd, id)
	r.publish(t, direct("a", "m3"), direct("b", "m4"))
	for range 3 {
		id++
		if seq := r.barrier(t, rd, id); seq != 2 {
			t.Errorf("barrier %d after Pause reports sequence %d, want 2", id, seq)
		}
	}
	checkPayloads(t, r, id, "", "")
}

// Barriers requested while messages stream in split every shard's input at
// the sequence they report: the messages up to it before the barrier, the
// later ones after it.
func TestReaderBarriersFollowTheMessagesReadBeforeThem(t *testing.T) {
	const n = 500
	r := newRig(t)
	rd := r.reader(t, 0)
	run(t, rd)
	published := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		for i := 1; i <= n; i++ {
			m := direct([]string{"a", "b", "c"}[i%3], strconv.Itoa(i))
			ack, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: m.subject, Header: m.header, Data: []byte(m.data)})
			if err == nil && ack.Sequence != uint64(i) {
				err = fmt.Errorf("message %d stored as sequence %d", i, ack.Sequence)
			}
			if err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	// Barriers one after the other while the messages come, until one
	// covers them all.
	var seqs []uint64 // reported, by barrier id - 1
	deadline := time.Now().Add(waitLimit)
	for done := false; !done || seqs[len(seqs)-1] < n; {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d barriers and the last reports sequence %d, want %d", waitLimit, len(seqs), seqs[len(seqs)-1], n)
		}
		select {
		case err := <-published:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
		seqs = append(seqs, r.barrier(t, rd, uint64(len(seqs)+1)))
	}

	seen := make([]int, n+1)
	for sh := range 2 {
		var prev uint64
		for b, seq := range seqs {
			if seq < prev {
				t.Fatalf("barrier %d reports sequence %d after %d", b+1, seq, prev)
			}
			for _, it := range r.shards.upTo(t, sh, uint64(b+1)) {
				m, err := strconv.ParseUint(string(it.Msg.Payload), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				if m <= prev || m > seq {
					t.Errorf("shard %d: message %d between barriers %d (sequence %d) and %d (sequence %d)", sh, m, b, prev, b+1, seq)
				}
				seen[m]++
			}
			prev = seq
		}
	}
	for m := 1; m <= n; m++ {
		if seen[m] != 1 {
			t.Errorf("message %d delivered %d times", m, seen[m])
		}
	}
}

// A reader resumes right after the sequence of the last checkpoint.
func TestReaderStartsAfterTheCheckpointedSequence(t *testing.T) {
	r := newRig(t)
	r.publish(t, direct("a", "m1"), direct("b", "m2"), direct("a", "m3"), direct("a", "m4"), direct("b", "m5"))
	rd := r.reader(t, 3)
	// Requested before the reader runs: emitted before it reads anything.
	rd.RequestBarrier(1)
	run(t, rd)
	if b := <-r.barriers; b.id != 1 || b.seq != 3 {
		t.Errorf("first barrier %d reports sequence %d, want 1 at 3", b.id, b.seq)
	}
	checkPayloads(t, r, 1, "", "")
	id := r.barrierAt(t, rd, 1, 5)
	checkPayloads(t, r, id, "m4", "m5")
}

func TestReaderReportsADeletedStream(t *testing.T) {
	r := newRig(t)
	rd := r.reader(t, 0)
	run(t, rd)
	r.publish(t, direct("a", "m1"), direct("b", "m2"))
	id := r.barrierAt(t, rd, 0, 2)
	checkPayloads(t, r, id, "m1", "m2")
	if f := rd.Failing(); f != nil {
		t.Fatalf("Failing = %v while reading works", f.Err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "Failing after the stream was deleted", func() bool { return rd.Failing() != nil })
	if f := rd.Failing(); !errors.Is(f.Err, jetstream.ErrStreamNotFound) || f.Since.IsZero() {
		t.Errorf("Failing = %v since %v, want stream not found and when it began", f.Err, f.Since)
	}
	// Barriers go on while the reader fails.
	if seq := r.barrier(t, rd, id+1); seq != 2 {
		t.Errorf("barrier while failing reports sequence %d, want 2", seq)
	}
	id++

	r.ensureStream(t)
	testwait.For(t, "Failing to clear after the stream was created again", func() bool { return rd.Failing() == nil })
	// The new stream numbers from 1 again; the reader reads it.
	r.publish(t, direct("a", "n1"), direct("b", "n2"), direct("c", "n3"))
	id = r.barrierAt(t, rd, id, 3)
	r.shards.upTo(t, 0, id)
	if got := payloads(t, r.shards.upTo(t, 1, id)); len(got) == 0 || got[len(got)-1] != "n3" {
		t.Errorf("shard 1 got %v after the stream was created again, want n3 last", got)
	}
}

// item is a batch item for ns/fn at id.
func item(id, data, replyTo, key string) *twinflowv1.IngressEnvelope {
	return &twinflowv1.IngressEnvelope{Target: &twinflowv1.Address{Type: "ns/fn", Id: id},
		Argument: &twinflowv1.TypedValue{Typename: "ns/t", Value: []byte(data)}, ReplyTo: replyTo, IdempotencyKey: key}
}

// batch is a batch envelope of items.
func batch(t *testing.T, header nats.Header, items ...*twinflowv1.IngressEnvelope) msg {
	t.Helper()
	b, err := proto.Marshal(&twinflowv1.IngressBatch{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	return msg{subject: router.BatchSubject, header: header, data: string(b)}
}

// A batch envelope becomes one message per item, in order, each with its
// key; an invalid item is dead-lettered by itself with its index (and
// answered when it is a request), and the others go on.
func TestReaderDeliversTheItemsOfABatch(t *testing.T) {
	r := newRig(t)
	noTypename := item("b", "no typename", "_INBOX.q1", "")
	noTypename.Argument.Typename = ""
	noTarget := item("a", "no target", "", "")
	noTarget.Target = nil
	withID := batch(t, nats.Header{"Nats-Msg-Id": {"gw-1"}, "X-Trace": {"t"}},
		item("a", "i0", "", ""), item("b", "i1", "_INBOX.q0", "own"), noTypename, item("c", "i3", "", ""), noTarget)
	withoutID := batch(t, nil, item("a", "j0", "", ""), item("b", "j1", "", "k"))
	keyed := direct("c", "single")
	keyed.header.Set("Nats-Msg-Id", "m-1")
	r.publish(t, withID, direct("a", "plain"), withoutID, keyed)
	rd := r.reader(t, 0)
	run(t, rd)
	id := r.barrierAt(t, rd, 0, 4)

	type delivered struct{ payload, replyTo, key string }
	want := [2][]delivered{
		{{"i0", "", "IN/gw-1/0"}, {"plain", "", ""}, {"j0", "", ""}},
		{{"i1", "_INBOX.q0", "IN/own"}, {"i3", "", "IN/gw-1/3"}, {"j1", "", "IN/k"}, {"single", "", "IN/m-1"}},
	}
	for sh := range 2 {
		var got []delivered
		for _, it := range r.shards.upTo(t, sh, id) {
			got = append(got, delivered{string(it.Msg.Payload), it.Msg.ReplyTo, it.Msg.Key})
			if it.Msg.Typename != "ns/t" || it.Msg.Target.Type != "ns/fn" {
				t.Errorf("shard %d: %+v", sh, it.Msg)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want[sh]) {
			t.Errorf("shard %d got %v, want %v", sh, got, want[sh])
		}
	}

	dead, replies := r.dlq.get()
	if len(dead) != 2 {
		t.Fatalf("dead letters %v, want the two bad items", dead)
	}
	for i, w := range []struct {
		index  int
		env    *twinflowv1.IngressEnvelope
		reason router.Reason
	}{{2, noTypename, router.ReasonMissingTypename}, {4, noTarget, router.ReasonBadEnvelope}} {
		d, h := dead[i], dead[i].GetHeaders()
		var env twinflowv1.IngressEnvelope
		if err := proto.Unmarshal(d.GetData(), &env); err != nil || !proto.Equal(&env, w.env) {
			t.Errorf("dead letter %d holds %x, want the item %v (%v)", i, d.GetData(), w.env, err)
		}
		if d.GetMsgId() != fmt.Sprintf("ingress-%s-1-%d", stream, w.index) || d.GetSubject() != router.DeadLetterSubject ||
			h[router.BatchIndexHeader] != strconv.Itoa(w.index) || h[router.ErrorReasonHeader] != string(w.reason) ||
			h[router.OriginalSubjectHeader] != router.BatchSubject || h["X-Trace"] != "t" || h[router.ErrorHeader] == "" {
			t.Errorf("dead letter %d = %v; want id ingress-%s-1-%d, index %d, reason %s, the batch's subject and headers",
				i, d, stream, w.index, w.index, w.reason)
		}
	}
	if len(replies) != 1 || replies[0].GetSubject() != "_INBOX.q1" ||
		replies[0].GetHeaders()[router.ErrorReasonHeader] != string(router.ReasonMissingTypename) {
		t.Errorf("answers %v, want the bad request item's error on _INBOX.q1", replies)
	}
}

// A reader hands the shards about maxRoundItems messages at a time and
// looks at their memory bounds in between, however many items the stream
// messages it read hold.
func TestReaderDeliversLargeBatchesInRounds(t *testing.T) {
	r := newRig(t)
	const perBatch = 3000 // two batches exceed a round, one does not
	for b := range 3 {
		items := make([]*twinflowv1.IngressEnvelope, perBatch)
		for i := range items {
			items[i] = item("a", fmt.Sprintf("%d-%d", b, i), "", "")
		}
		r.publish(t, batch(t, nil, items...))
	}
	r.shards.whileQueued[0].Store(true)
	rd := r.reader(t, 0)
	run(t, rd)
	// Shard 0 is saturated while its inbox holds messages, so each drain
	// takes one round: one or two batches, as the stream hands them over,
	// never all three.
	inbox := r.shards.inboxes[0]
	var rounds []int
	for total := 0; total < 3*perBatch; {
		select {
		case <-inbox.Ready():
		case <-time.After(waitLimit):
			t.Fatalf("stuck after rounds %v", rounds)
		}
		n := 0
		for _, it := range inbox.Drain(nil) {
			if it.Barrier == 0 {
				n++
			}
		}
		if n > 0 {
			rounds = append(rounds, n)
			total += n
		}
	}
	if len(rounds) < 2 || slices.Max(rounds) > 2*perBatch {
		t.Errorf("rounds of %v messages; want at most %d each", rounds, 2*perBatch)
	}
}
