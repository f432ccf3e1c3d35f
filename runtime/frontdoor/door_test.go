package frontdoor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

const (
	stream = "IN"
	// waitLimit bounds every wait: reaching it means something is stuck,
	// never that it was slow.
	waitLimit = 20 * time.Second
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// rig is an embedded NATS server that fsyncs every write, as the runtime's
// does, with the direct ingress stream.
type rig struct {
	nc *nats.Conn
	js jetstream.JetStream
	// read is the position the door is told the stream was read up to.
	read atomic.Uint64
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv, err := natsbus.StartServer(natsbus.ServerOptions{NoAuth: true, Dir: t.TempDir(), Port: -1, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := natsbus.Connect(natsbus.ConnOptions{URL: srv.ClientURL(), Name: t.Name(), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := &rig{nc: nc, js: js}
	r.ensureStream(t)
	return r
}

func (r *rig) ensureStream(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, r.js, natsbus.StreamSpec{Name: stream, Subjects: router.DirectStreamSubjects}); err != nil {
		t.Fatal(err)
	}
}

// door returns a door writing into the rig's stream, closed when the test
// ends.
func (r *rig) door(t *testing.T, cfg Config) *Door {
	t.Helper()
	cfg.Stream, cfg.Logger = stream, quietLog
	if cfg.Read == nil {
		cfg.Read = func() uint64 { return 1 << 62 } // read as soon as written
	}
	d := New(cfg, StreamWriter{JS: r.js, Subject: router.BatchSubject})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return d
}

// stored returns the messages the stream holds, by stream sequence.
func (r *rig) stored(t *testing.T) map[uint64][]*twinflowv1.IngressEnvelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64][]*twinflowv1.IngressEnvelope{}
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != router.BatchSubject {
			t.Fatalf("message %d on %s", seq, m.Subject)
		}
		var b twinflowv1.IngressBatch
		if err := proto.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("message %d is not a batch: %v", seq, err)
		}
		out[seq] = b.GetItems()
	}
	return out
}

func msg(id string, n int) Message {
	return Message{Target: router.Address{Type: "ns/f", ID: id}, Typename: "ns/T", Payload: fmt.Appendf(nil, "m%d", n)}
}

// wait waits for a result.
func wait(t *testing.T, ch <-chan Result) Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLimit):
		t.Fatal("no result")
		return Result{}
	}
}

// Many concurrent clients get each message acknowledged with the sequence
// of a write that holds it, once, with its key; far fewer writes than
// messages reach the stream.
func TestDoorGroupsConcurrentMessagesIntoDurableWrites(t *testing.T) {
	r := newRig(t)
	d := r.door(t, Config{})
	const clients, each = 32, 20
	type acked struct {
		key string
		seq uint64
	}
	results := make(chan acked, clients*each)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			ch := make(chan Result, 1)
			for i := range each {
				m := msg(fmt.Sprint(c), i)
				if i%2 == 0 {
					m.Key = fmt.Sprintf("c%d-%d", c, i)
				}
				if err := d.Submit(m, func(r Result) { ch <- r }); err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				res := wait(t, ch)
				if res.Err != nil || res.Stream != stream || res.Seq == 0 || res.Key == "" || i%2 == 0 && res.Key != m.Key {
					t.Errorf("client %d message %d: %+v, want an acknowledgement with key %q", c, i, res, m.Key)
					return
				}
				results <- acked{res.Key, res.Seq}
			}
		})
	}
	wg.Wait()
	close(results)
	stored := r.stored(t)
	byKey := map[string]uint64{}
	for seq, items := range stored {
		for _, it := range items {
			if _, dup := byKey[it.GetIdempotencyKey()]; dup {
				t.Errorf("key %s stored twice", it.GetIdempotencyKey())
			}
			byKey[it.GetIdempotencyKey()] = seq
		}
	}
	n := 0
	for a := range results {
		n++
		if byKey[a.key] != a.seq {
			t.Errorf("key %s acknowledged at %d, stored at %d", a.key, a.seq, byKey[a.key])
		}
	}
	if n != clients*each || len(byKey) != n {
		t.Errorf("%d acknowledged, %d stored; want %d", n, len(byKey), clients*each)
	}
	if len(stored) >= n {
		t.Errorf("%d writes for %d messages: nothing was grouped", len(stored), n)
	}
	t.Logf("%d messages in %d writes", n, len(stored))
}

// A message is acknowledged only once its write is durable: when the
// write fails, the client is told the message is unavailable, to send it
// again.
func TestDoorAcknowledgesOnlyDurableWrites(t *testing.T) {
	r := newRig(t)
	d := r.door(t, Config{WriteTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	ch := make(chan Result, 1)
	if err := d.Submit(msg("a", 1), func(r Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	res := wait(t, ch)
	if res.Err == nil || res.Err.Code != connect.CodeUnavailable || res.Err.RetryAfter <= 0 || res.Seq != 0 {
		t.Fatalf("write into a deleted stream: %+v, want unavailable with a time to retry", res)
	}
	// The stream back, the same message with its key goes through.
	r.ensureStream(t)
	m := msg("a", 1)
	m.Key = res.Key
	if err := d.Submit(m, func(r Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	if res := wait(t, ch); res.Err != nil || res.Key != m.Key {
		t.Fatalf("after the stream is back: %+v", res)
	}
}

// While the stream is not read, the door writes up to MaxUnread messages,
// then holds its writes; messages wait in its bounded queue, beyond it they
// are refused at once, and those that waited MaxWait are refused too. Once
// the stream is read again, writes resume.
func TestDoorHoldsWritesWhileTheStreamIsNotRead(t *testing.T) {
	r := newRig(t)
	d := r.door(t, Config{Limits: Limits{MaxUnread: 3, MaxWait: 300 * time.Millisecond, MaxQueued: 2},
		Read: func() uint64 { return r.read.Load() }})
	results := make(chan Result, 16)
	submit := func(n int) *Error { return d.Submit(msg("a", n), func(r Result) { results <- r }) }
	for i := range 4 { // one at a time: four writes, four unread
		if err := submit(i); err != nil {
			t.Fatal(err)
		}
		if res := wait(t, results); res.Err != nil {
			t.Fatalf("message %d: %v", i, res.Err)
		}
	}
	// Held: two wait, the third is refused at once.
	for i := 4; i < 6; i++ {
		if err := submit(i); err != nil {
			t.Fatalf("message %d refused: %v", i, err)
		}
	}
	if err := submit(6); err == nil || err.Code != connect.CodeUnavailable {
		t.Fatalf("a message beyond the queue: %v, want unavailable", err)
	}
	for range 2 {
		if res := wait(t, results); res.Err == nil || res.Err.Code != connect.CodeUnavailable || res.Err.RetryAfter <= 0 {
			t.Fatalf("a message that waited while writes were held: %+v, want unavailable", res)
		}
	}
	if got := len(r.stored(t)); got != 4 {
		t.Errorf("%d writes stored while held, want 4", got)
	}
	// Read: the next message is written.
	r.read.Store(4)
	if err := submit(7); err != nil {
		t.Fatal(err)
	}
	if res := wait(t, results); res.Err != nil || res.Seq != 5 {
		t.Fatalf("after the stream was read: %+v, want sequence 5", res)
	}
}

// Close refuses what waits and what comes, and lets the write in flight
// finish and answer.
func TestDoorCloseAnswersEverything(t *testing.T) {
	r := newRig(t)
	var read atomic.Uint64
	d := New(Config{Stream: stream, Logger: quietLog, Limits: Limits{MaxUnread: 1}, Read: read.Load}, StreamWriter{JS: r.js, Subject: router.BatchSubject})
	results := make(chan Result, 8)
	for i := range 4 {
		if err := d.Submit(msg("a", i), func(r Result) { results <- r }); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var ok, refused int
	for range 4 {
		res := wait(t, results)
		switch {
		case res.Err == nil:
			ok++
		case res.Err.Code == connect.CodeUnavailable:
			refused++
		default:
			t.Errorf("result %+v", res)
		}
	}
	if ok == 0 || ok+refused != 4 {
		t.Errorf("%d stored and %d refused, want the first write stored and the rest refused", ok, refused)
	}
	if err := d.Submit(msg("a", 9), func(Result) { t.Error("answered after Close") }); err == nil || err.Code != connect.CodeUnavailable {
		t.Errorf("Submit after Close: %v, want unavailable", err)
	}
}

// Bad messages are refused before they are queued, with the code and
// reason that say what is wrong.
func TestDoorRefusesBadMessages(t *testing.T) {
	r := newRig(t)
	d := r.door(t, Config{MaxPayload: 8, Serves: func(ft string) bool { return ft == "ns/f" }})
	long := make([]byte, router.MaxIdempotencyKey+1)
	for i := range long {
		long[i] = 'k'
	}
	tests := []struct {
		name   string
		edit   func(*Message)
		code   connect.Code
		reason router.Reason
	}{
		{"bad type", func(m *Message) { m.Target.Type = "nope" }, connect.CodeInvalidArgument, router.ReasonBadID},
		{"empty id", func(m *Message) { m.Target.ID = "" }, connect.CodeInvalidArgument, router.ReasonBadID},
		{"bad typename", func(m *Message) { m.Typename = "x" }, connect.CodeInvalidArgument, router.ReasonBadTypename},
		{"oversized", func(m *Message) { m.Payload = make([]byte, 9) }, connect.CodeResourceExhausted, router.ReasonOversized},
		{"not an inbox", func(m *Message) { m.ReplyTo = "twinflow.in.a.b.c" }, connect.CodeInvalidArgument, router.ReasonBadReplyTo},
		{"long key", func(m *Message) { m.Key = string(long) }, connect.CodeInvalidArgument, router.ReasonBadIdempotencyKey},
		{"no endpoint", func(m *Message) { m.Target.Type = "ns/g" }, connect.CodeNotFound, router.ReasonNoEndpoint},
	}
	for _, tt := range tests {
		m := msg("a", 1)
		tt.edit(&m)
		err := d.Submit(m, func(Result) { t.Errorf("%s: queued", tt.name) })
		if err == nil || err.Code != tt.code || err.Reason != tt.reason || err.Detail == "" {
			t.Errorf("%s: %v, want %s %s", tt.name, err, tt.code, tt.reason)
		}
	}
	if got := r.stored(t); len(got) != 0 {
		t.Errorf("stored %v", got)
	}
}
