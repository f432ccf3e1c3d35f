package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/natsbus/natsbustest"
)

// testLogger logs warnings to stderr, or everything with NATSBUS_DEBUG=1.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("NATSBUS_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := Connect(ConnOptions{URL: url, Name: t.Name(), Logger: testLogger(), ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

func ensure(t testing.TB, js jetstream.JetStream, name string, subjects ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, js, StreamSpec{Name: name, Subjects: subjects}); err != nil {
		t.Fatal(err)
	}
}

// records returns n records numbered from first, with message IDs.
func records(subject string, first, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		k := first + i
		recs[i] = Record{Subject: subject, Data: []byte("m" + strconv.Itoa(k)), MsgID: "id-" + strconv.Itoa(k)}
	}
	return recs
}

func publish(t testing.TB, js jetstream.JetStream, recs []Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := NewPublisher(js, PublisherOptions{Logger: testLogger()}).Publish(ctx, recs); err != nil {
		t.Fatal(err)
	}
}

func streamMsgs(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// readN reads exactly n messages and checks that no more follow.
func readN(t testing.TB, r *Reader, n int, timeout time.Duration) []Msg {
	t.Helper()
	got := readAtLeast(t, r, n, timeout)
	if len(got) > n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
	return got
}

// readAtLeast reads whole batches until it has n messages or more: the
// reader's batches need not end at n.
func readAtLeast(t testing.TB, r *Reader, n int, timeout time.Duration) []Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []Msg
	for len(got) < n {
		batch, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		got = append(got, batch...)
	}
	return got
}

// checkSeqs checks that msgs have sequences first, first+1, ... and the
// payloads that records gave them.
func checkSeqs(t testing.TB, msgs []Msg, first uint64) {
	t.Helper()
	for i, m := range msgs {
		want := first + uint64(i)
		if m.Seq != want {
			t.Fatalf("message %d has sequence %d, want %d", i, m.Seq, want)
		}
		if string(m.Data) != "m"+strconv.FormatUint(want, 10) {
			t.Fatalf("message %d has data %q, want m%d", m.Seq, m.Data, want)
		}
	}
}

func newReader(t testing.TB, js jetstream.JetStream, stream string, after uint64, opts ReaderOptions) *Reader {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := NewReader(ctx, js, stream, after, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// exercise runs the checks that hold for any server: deduplicating
// publishes, reading from a sequence, an idle Next, and request/reply.
func exercise(t *testing.T, url string) {
	nc, js := connect(t, url)
	ensure(t, js, "EX", "ex.>")

	const n = 2000
	recs := records("ex.a", 1, n)
	publish(t, js, recs)
	publish(t, js, recs) // same IDs: dropped
	if got := streamMsgs(t, js, "EX"); got != n {
		t.Fatalf("stream holds %d messages after publishing %d twice with IDs, want %d", got, n, n)
	}

	r := newReader(t, js, "EX", n/2, ReaderOptions{MaxBatch: 128, MaxWait: 100 * time.Millisecond})
	checkSeqs(t, readN(t, r, n/2, 20*time.Second), n/2+1)
	start := time.Now()
	batch, err := r.Next(context.Background())
	if err != nil || len(batch) != 0 {
		t.Fatalf("idle Next = %d messages, %v; want none", len(batch), err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("idle Next took %s with MaxWait 100ms", d)
	}

	// Request/reply through the stream.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for {
			batch, err := r.Next(ctx)
			if err != nil {
				done <- err
				return
			}
			for _, m := range batch {
				if m.Reply == "" {
					done <- fmt.Errorf("message %d has no reply inbox", m.Seq)
					return
				}
				if err := nc.Publish(m.Reply, append([]byte("re:"), m.Data...)); err != nil {
					done <- err
					return
				}
				done <- nil
				return
			}
		}
	}()
	reply, err := Request(ctx, js, "ex.req", nats.Header{"K": {"v"}}, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != "re:ping" {
		t.Fatalf("reply %q, want re:ping", reply.Data)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedServer(t *testing.T) {
	exercise(t, startTestServer(t).ClientURL())
}

func TestExternalServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	exercise(t, natsbustest.StartExternalServer(t, natsbustest.BuildExternalServer(t), ""))
}

// startTestServer starts an embedded server for a test: a temporary store
// directory, a free port, and a 1-minute sync interval, which keeps
// acknowledged messages across a process crash (not a power loss) and
// publishes fast.
func startTestServer(t testing.TB) *Server {
	t.Helper()
	return startAt(t, t.TempDir(), -1, time.Minute)
}

// startAt starts an embedded server; sync 0 fsyncs every write. It is shut
// down when the test ends, if not before.
func startAt(t testing.TB, dir string, port int, sync time.Duration) *Server {
	t.Helper()
	s, err := StartServer(ServerOptions{Dir: dir, Port: port, NoAuth: true, SyncInterval: sync, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func port(t testing.TB, s *Server) int {
	t.Helper()
	_, p, err := net.SplitHostPort(s.ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func TestRestartKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, -1, 0)
	nc, js := connect(t, s.ClientURL())
	ensure(t, js, "DUR", "dur.>")
	publish(t, js, records("dur.x", 1, 200))
	nc.Close()
	s.Shutdown()

	s = startAt(t, dir, -1, 0)
	nc, js = connect(t, s.ClientURL())
	if got := streamMsgs(t, js, "DUR"); got != 200 {
		t.Fatalf("after restart the stream holds %d messages, want 200", got)
	}
	r := newReader(t, js, "DUR", 0, ReaderOptions{})
	checkSeqs(t, readN(t, r, 200, 10*time.Second), 1)
}

// TestStartServerPortTaken: a port asked for that is taken is an error
// naming it, never another port that clients would not know of.
func TestStartServerPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	s, err := StartServer(ServerOptions{Dir: t.TempDir(), Port: taken, NoAuth: true, Logger: testLogger()})
	if err == nil {
		s.Shutdown()
		t.Fatalf("server started on taken port %d (listening on %d)", taken, port(t, s))
	}
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(taken)) {
		t.Fatalf("error %q: want ErrPortInUse naming port %d", err, taken)
	}
}

// TestStartServerDefaultPort: without a port the server takes 4222, or a
// free port when 4222 is taken.
func TestStartServerDefaultPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(DefaultPort))
	if err == nil {
		defer l.Close() // now 4222 is taken for sure
	}
	s := startAt(t, t.TempDir(), 0, time.Minute)
	if p := port(t, s); p == DefaultPort || p <= 0 {
		t.Fatalf("server listens on %d; want a free port other than the taken %d", p, DefaultPort)
	}
	connect(t, s.ClientURL())
}

func TestEnsureStream(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ctx := context.Background()
	spec := StreamSpec{Name: "S", Subjects: []string{"a.>"}, DuplicateWindow: time.Minute, MaxBytes: 1 << 20}
	s1, err := EnsureStream(ctx, js, spec)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := EnsureStream(ctx, js, spec)
	if err != nil {
		t.Fatal(err)
	}
	if c1, c2 := s1.CachedInfo().Config, s2.CachedInfo().Config; !slices.Equal(c1.Subjects, c2.Subjects) ||
		c1.Duplicates != c2.Duplicates || c1.MaxBytes != c2.MaxBytes || c2.Duplicates != time.Minute {
		t.Fatalf("second EnsureStream changed the config: %+v -> %+v", c1, c2)
	}
	spec.Subjects = []string{"a.>", "b.*"}
	s3, err := EnsureStream(ctx, js, spec)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s3.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Config.Subjects, spec.Subjects) {
		t.Fatalf("subjects %v, want %v", info.Config.Subjects, spec.Subjects)
	}
	if _, err := EnsureStream(ctx, js, StreamSpec{Name: "S", Subjects: spec.Subjects, Storage: jetstream.MemoryStorage}); err == nil {
		t.Fatal("changing the storage type succeeded; JetStream refuses it")
	}
}

func TestReaderFromSequence(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "R", "r.>")
	publish(t, js, records("r.x", 1, 10000))

	r := newReader(t, js, "R", 5000, ReaderOptions{MaxBatch: 1000})
	got := readN(t, r, 5000, 20*time.Second)
	checkSeqs(t, got, 5001)
	for _, m := range got {
		if m.Subject != "r.x" || m.Time.IsZero() || m.Header.Get(jetstream.MsgIDHeader) == "" {
			t.Fatalf("message %d: subject %q time %v header %v", m.Seq, m.Subject, m.Time, m.Header)
		}
	}
	for range 3 {
		start := time.Now()
		batch, err := r.Next(context.Background())
		if err != nil || len(batch) != 0 {
			t.Fatalf("Next at the end = %d messages, %v", len(batch), err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("Next at the end took %s, MaxWait is 50ms", d)
		}
	}
	// New messages arrive on the open request.
	publish(t, js, records("r.x", 10001, 3))
	checkSeqs(t, readN(t, r, 3, 10*time.Second), 10001)

	// A start past the end waits for what comes.
	r2 := newReader(t, js, "R", 10003, ReaderOptions{})
	publish(t, js, records("r.x", 10004, 1))
	checkSeqs(t, readN(t, r2, 1, 10*time.Second), 10004)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
	r.Close()
	if _, err := r.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestReaderPending checks that a filtered reader's lag counts only the
// messages of its filter.
func TestReaderPending(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "P", "p.>")
	publish(t, js, records("p.mine", 1, 10))
	publish(t, js, records("p.other", 11, 50))
	r := newReader(t, js, "P", 0, ReaderOptions{MaxBatch: 1, FilterSubjects: []string{"p.mine"}})
	readN(t, r, 1, 5*time.Second)
	if got := r.Pending(); got != 9 {
		t.Fatalf("Pending after 1 of 10 messages of the filter (and 50 of another) = %d, want 9", got)
	}
}

// Seek moves a reader, back or forth and to other subjects, while it
// runs; an empty filter reads nothing, and creates no consumer.
func TestReaderSeek(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "S", "s.>")
	publish(t, js, records("s.a", 1, 10))  // 1-10
	publish(t, js, records("s.b", 11, 10)) // 11-20
	r := newReader(t, js, "S", 0, ReaderOptions{MaxBatch: 4, FilterSubjects: []string{}})
	if got, err := r.Next(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("Next with no subjects = %d messages, %v", len(got), err)
	}
	if n := consumers(t, js, "S"); n != 0 {
		t.Fatalf("a reader of no subjects has %d consumers", n)
	}
	r.Seek(0, []string{"s.b"})
	checkSeqs(t, readN(t, r, 10, 10*time.Second), 11)
	r.Seek(4, []string{"s.a", "s.b"})
	checkSeqs(t, readN(t, r, 16, 10*time.Second), 5)
	r.Seek(20, []string{})
	publish(t, js, records("s.a", 21, 1))
	if got, err := r.Next(context.Background()); err != nil || len(got) != 0 {
		t.Fatalf("Next after a seek to no subjects = %d messages, %v", len(got), err)
	}
	r.Seek(20, nil)
	checkSeqs(t, readN(t, r, 1, 10*time.Second), 21)
}

// consumers counts a stream's consumers.
func consumers(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range s.ConsumerNames(context.Background()).Name() {
		n++
	}
	return n
}

func TestReaderMissingStream(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	_, err := NewReader(context.Background(), js, "NOPE", 0, ReaderOptions{Logger: testLogger()})
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("NewReader on a missing stream: %v", err)
	}
}

// A reader whose consumer disappears resumes after the last message it
// returned.
func TestReaderConsumerDeleted(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "D", "d.>")
	publish(t, js, records("d.x", 1, 3000))
	r := newReader(t, js, "D", 0, ReaderOptions{MaxBatch: 100, Buffer: 200})
	got := readAtLeast(t, r, 1000, 10*time.Second)

	ctx := context.Background()
	s, err := js.Stream(ctx, "D")
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.ConsumerNames(ctx).Name() {
		if err := s.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	got = append(got, readN(t, r, 3000-len(got), 20*time.Second)...)
	checkSeqs(t, got, 1)
}

// A reader keeps reading, without gaps or repeats, while the server
// restarts under it.
func TestReaderAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, -1, time.Minute)
	p := port(t, s)
	_, js := connect(t, s.ClientURL())
	ensure(t, js, "RS", "rs.>")
	publish(t, js, records("rs.x", 1, 500))
	r := newReader(t, js, "RS", 0, ReaderOptions{MaxBatch: 100, Buffer: 100, CreateTimeout: time.Second})
	got := readAtLeast(t, r, 200, 10*time.Second)

	s.Shutdown()
	s = startAt(t, dir, p, time.Minute)
	if port(t, s) != p {
		t.Skipf("port %d was taken during the restart", p)
	}
	got = append(got, readN(t, r, 500-len(got), 30*time.Second)...)
	checkSeqs(t, got, 1)
	publish(t, js, records("rs.x", 501, 10))
	checkSeqs(t, readN(t, r, 10, 10*time.Second), 501)
	r.Close() // while the server runs
}

func TestPublisherDedup(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "P", "p.>")
	recs := records("p.x", 1, 100)
	publish(t, js, recs)
	publish(t, js, recs)
	if got := streamMsgs(t, js, "P"); got != 100 {
		t.Fatalf("%d messages after publishing 100 IDs twice", got)
	}
	for i := range recs {
		recs[i].MsgID = ""
	}
	publish(t, js, recs)
	publish(t, js, recs)
	if got := streamMsgs(t, js, "P"); got != 300 {
		t.Fatalf("%d messages after publishing 100 without IDs twice more, want 300", got)
	}
}

func TestPublisherPermanentError(t *testing.T) {
	nc, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "PE", "pe.>")
	big := make([]byte, nc.MaxPayload()+1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs := []Record{{Subject: "pe.x", Data: []byte("1")}, {Subject: "pe.x", Data: big}, {Subject: "pe.x", Data: []byte("2")}, {Subject: "pe.y", Data: big}}
	err := NewPublisher(js, PublisherOptions{}).Publish(ctx, recs)
	if !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("oversized publish: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("a permanent error was retried until the context ended")
	}
	var rej *RejectedError
	if !errors.As(err, &rej) || !slices.Equal(rej.Records, []int{1, 3}) || len(rej.Errs) != 2 {
		t.Fatalf("error %v, want a RejectedError naming records 1 and 3", err)
	}
	if !strings.Contains(err.Error(), `2 of 4 records`) || !strings.Contains(err.Error(), `"pe.x"`) {
		t.Errorf("error text %q", err)
	}
	// The records around the refused ones are stored.
	if got := streamMsgs(t, js, "PE"); got != 2 {
		t.Fatalf("%d messages stored, want the 2 that fit", got)
	}
}

func TestPublisherAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, -1, time.Minute)
	p := port(t, s)
	_, js := connect(t, s.ClientURL())
	ensure(t, js, "PR", "pr.>")
	publish(t, js, records("pr.x", 1, 100))
	s.Shutdown()

	// The server is down: Publish gives up when the context ends.
	pub := NewPublisher(js, PublisherOptions{AckTimeout: 500 * time.Millisecond, Logger: testLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := pub.Publish(ctx, records("pr.x", 1, 10))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with the server down: %v", err)
	}

	// Publishing while the server comes back succeeds, once per record.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- pub.Publish(ctx, records("pr.x", 101, 400))
	}()
	time.Sleep(200 * time.Millisecond)
	s = startAt(t, dir, p, time.Minute)
	if port(t, s) != p {
		t.Skipf("port %d was taken during the restart", p)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, js, "PR"); got != 500 {
		t.Fatalf("%d messages, want 500", got)
	}
}

// JetStream answers a core request to a stream subject itself: the stored
// message has no reply subject, which is why Request uses ReplyToHeader.
func TestCoreRequestLosesReply(t *testing.T) {
	nc, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "Q", "q.>")
	reply, err := nc.Request("q.x", []byte("hi"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack jetstream.PubAck
	if err := jsonUnmarshal(reply.Data, &ack); err != nil || ack.Stream != "Q" || ack.Sequence != 1 {
		t.Fatalf("core request got %q (%v), want JetStream's ack", reply.Data, err)
	}
	r := newReader(t, js, "Q", 0, ReaderOptions{})
	m := readN(t, r, 1, 5*time.Second)[0]
	if m.Reply != "" {
		t.Fatalf("Reply = %q for a core request", m.Reply)
	}
}

func TestParseAckReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ackMeta
		ok   bool
	}{
		{"$JS.ACK.ORDERS.c_1.1.5001.1.1700000000000000000.4999", ackMeta{"ORDERS", "c_1", 5001, 1, 1700000000000000000, 4999}, true},
		{"$JS.ACK.dom.ACCHASH.ORDERS.c_1.2.7.3.1700000000000000000.12.rnd", ackMeta{"ORDERS", "c_1", 7, 3, 1700000000000000000, 12}, true},
		{"$JS.ACK.dom.ACCHASH.ORDERS.c_1.2.7.3.1700000000000000000.0", ackMeta{"ORDERS", "c_1", 7, 3, 1700000000000000000, 0}, true},
		{"$JS.ACK.ORDERS.c_1.1.x.1.1.0", ackMeta{}, false},
		{"$JS.ACK.ORDERS.c_1", ackMeta{}, false},
		{"$JS.NAK.ORDERS.c_1.1.1.1.1.0", ackMeta{}, false},
		{"$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m", ackMeta{}, false},
	} {
		got, ok := parseAckReply(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseAckReply(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// The bookkeeping in take: in-order messages pass, a gap or a repeat drops
// the consumer, statuses of earlier requests are ignored.
func TestReaderTake(t *testing.T) {
	nc, js := connect(t, startTestServer(t).ClientURL())
	newState := func() (*Reader, *pull) {
		sub, err := nc.SubscribeSync(nc.NewInbox())
		if err != nil {
			t.Fatal(err)
		}
		r := &Reader{nc: nc, js: js, stream: "T", log: testLogger()}
		r.opts.setDefaults()
		p := &pull{name: "c", inbox: "in", sub: sub, opened: time.Now().Add(-time.Hour)}
		p.req = pullRequest{open: true, reply: "in.1", batch: 3, maxBytes: 1 << 20}
		p.reqNo = 1
		r.mu.cur = p
		r.mu.last = 10
		return r, p
	}
	data := func(dseq, sseq int) *nats.Msg {
		return &nats.Msg{Subject: "t.x", Reply: fmt.Sprintf("$JS.ACK.T.c.1.%d.%d.1.0", sseq, dseq), Data: []byte("x")}
	}
	status := func(subj, code, desc string) *nats.Msg {
		return &nats.Msg{Subject: subj, Header: nats.Header{"Status": {code}, "Description": {desc}}}
	}
	var mu sync.Mutex // take runs under Reader.mu in real use
	mu.Lock()
	defer mu.Unlock()

	r, p := newState()
	var batch []Msg
	for i, m := range []*nats.Msg{data(1, 11), status("in.0", "409", "Batch Completed"), data(2, 15)} {
		if !r.take(p, m, &batch) {
			t.Fatalf("message %d dropped the consumer", i)
		}
	}
	if len(batch) != 2 || batch[1].Seq != 15 || r.mu.last != 15 || p.req.got != 2 || !p.req.open {
		t.Fatalf("batch %v last %d req %+v", batch, r.mu.last, p.req)
	}
	if !r.take(p, status("in.1", "408", "Request Timeout"), &batch) || p.req.reply == "in.1" && p.req.open {
		t.Fatalf("408 did not end the request: %+v", p.req)
	}

	for name, m := range map[string]*nats.Msg{
		"gap":         data(2, 12),
		"repeat":      data(1, 10),
		"backwards":   data(1, 9),
		"no consumer": status("in.1", "503", ""),
		"deleted":     status("in.1", "409", "Consumer Deleted"),
		"bad meta":    {Subject: "t.x", Reply: "$JS.ACK.T.c.1.x"},
	} {
		r, p := newState()
		if r.take(p, m, &batch) || r.mu.cur != nil {
			t.Errorf("%s: consumer kept", name)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// The Reader ends a pull request when the bytes it received reach the
// request's max_bytes, so its count of a message's size (nats.Msg.Size)
// must be the server's. A second consumer asks for exactly the bytes of the
// first ten messages as measured by the first one, and must get exactly
// those ten.
func TestPullByteAccounting(t *testing.T) {
	nc, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "BY", "by.>")
	recs := records("by.x", 1, 50)
	for i := range recs {
		recs[i].Header = nats.Header{"H": {strings.Repeat("h", i)}}
	}
	publish(t, js, recs)
	ctx := context.Background()
	pullAll := func(consumer string, batch, maxBytes int) []*nats.Msg {
		t.Helper()
		if _, err := js.CreateConsumer(ctx, "BY", jetstream.ConsumerConfig{Name: consumer, AckPolicy: jetstream.AckNonePolicy}); err != nil {
			t.Fatal(err)
		}
		inbox := nc.NewInbox()
		ch := make(chan *nats.Msg, 100)
		sub, err := nc.ChanSubscribe(inbox, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		req := fmt.Sprintf(`{"batch":%d,"max_bytes":%d,"expires":%d}`, batch, maxBytes, time.Second)
		if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.BY."+consumer, inbox, []byte(req)); err != nil {
			t.Fatal(err)
		}
		var got []*nats.Msg
		for {
			select {
			case m := <-ch:
				got = append(got, m)
			case <-time.After(300 * time.Millisecond):
				return got
			}
		}
	}
	first := pullAll("a", 10, 1<<20)
	size := 0
	for _, m := range first {
		if strings.HasPrefix(m.Reply, "$JS.ACK.") { // not the "409 Batch Completed" status
			size += m.Size()
		}
	}
	second := pullAll("b", 50, size)
	if len(second) != 10 {
		for _, m := range second {
			t.Logf("subject %s reply %s size %d status %q %q", m.Subject, m.Reply, m.Size(), m.Header.Get("Status"), m.Header.Get("Description"))
		}
		t.Fatalf("asked for the %d bytes of 10 messages, got %d messages", size, len(second))
	}
	for _, m := range second {
		if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
			t.Fatalf("got a status %q %q", m.Header.Get("Status"), m.Header.Get("Description"))
		}
	}
}

// With a small server payload limit the byte budget, not the count, ends
// most pull requests; reading must still flow without stalls.
func TestReaderByteBudget(t *testing.T) {
	s, err := StartServer(ServerOptions{Dir: t.TempDir(), Port: -1, NoAuth: true, SyncInterval: time.Minute, MaxPayload: 1024, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	_, js := connect(t, s.ClientURL())
	ensure(t, js, "BB", "bb.>")
	recs := records("bb.x", 1, 5000)
	for i := range recs {
		recs[i].Header = nats.Header{"Pad": {strings.Repeat("p", i%700)}}
	}
	publish(t, js, recs)
	r := newReader(t, js, "BB", 0, ReaderOptions{BufferBytes: 1})
	if r.opts.BufferBytes != 2*1024+64<<10 {
		t.Fatalf("BufferBytes %d, want it raised to fit two maximal messages", r.opts.BufferBytes)
	}
	start := time.Now()
	checkSeqs(t, readN(t, r, 5000, 20*time.Second), 1)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("reading took %s: requests are stalling", d)
	}
}

func TestReaderCloseAndConnectionClose(t *testing.T) {
	s := startTestServer(t)
	_, js := connect(t, s.ClientURL())
	ensure(t, js, "C", "c.>")
	r := newReader(t, js, "C", 0, ReaderOptions{MaxWait: 20 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r.Next(context.Background()); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	r.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next during Close: %v", err)
	}

	nc2, js2 := connect(t, s.ClientURL())
	r2 := newReader(t, js2, "C", 0, ReaderOptions{})
	nc2.Close()
	if _, err := r2.Next(context.Background()); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("Next on a closed connection: %v", err)
	}
}

func TestConnectFails(t *testing.T) {
	if _, _, err := Connect(ConnOptions{URL: "nats://127.0.0.1:1", Logger: testLogger()}); err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if _, err := StartServer(ServerOptions{}); err == nil {
		t.Fatal("StartServer without Dir succeeded")
	}
	if _, err := StartServer(ServerOptions{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "NoAuth") {
		t.Fatalf("StartServer without users or NoAuth: %v", err)
	}
}

// A pull request that is never answered (here: one the Reader believes
// open under a reply subject the server does not know) makes the Reader
// replace its consumer, and reading continues where it was.
func TestReaderUnansweredRequest(t *testing.T) {
	_, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "U", "u.>")
	publish(t, js, records("u.x", 1, 10))
	r := newReader(t, js, "U", 0, ReaderOptions{MaxWait: 20 * time.Millisecond})
	got := readN(t, r, 10, 5*time.Second)

	r.mu.Lock()
	old := r.mu.cur
	old.req = pullRequest{open: true, reply: "nowhere", batch: 1, maxBytes: 1, deadline: time.Now().Add(-time.Second)}
	r.mu.Unlock()
	if b, err := r.Next(context.Background()); err != nil || len(b) != 0 {
		t.Fatalf("Next = %d messages, %v", len(b), err)
	}
	r.mu.Lock()
	replaced := r.mu.cur != old
	r.mu.Unlock()
	if !replaced {
		t.Fatal("the consumer was kept")
	}
	publish(t, js, records("u.x", 11, 5))
	got = append(got, readN(t, r, 5, 5*time.Second)...)
	checkSeqs(t, got, 1)
}

// While publishers write and the reader's consumer is deleted again and
// again, the reader returns every message once, in order.
func TestReaderChurn(t *testing.T) {
	url := startTestServer(t).ClientURL()
	_, js := connect(t, url)
	_, pjs := connect(t, url) // publishers have their own connection
	ensure(t, js, "CH", "ch.>")
	const n = 10000
	pubDone := make(chan error, 1)
	go func() {
		pub := NewPublisher(pjs, PublisherOptions{Logger: testLogger()})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := 1; i <= n; i += 500 {
			if err := pub.Publish(ctx, records("ch.x", i, 500)); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()
	r := newReader(t, js, "CH", 0, ReaderOptions{MaxBatch: 300, Buffer: 600})
	ctx := context.Background()
	s, err := js.Stream(ctx, "CH")
	if err != nil {
		t.Fatal(err)
	}
	var got []Msg
	deadline := time.Now().Add(30 * time.Second)
	for next := 1000; len(got) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("read %d of %d messages", len(got), n)
		}
		batch, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, batch...)
		if len(got) >= next {
			next += 2000
			for name := range s.ConsumerNames(ctx).Name() {
				_ = s.DeleteConsumer(ctx, name)
			}
		}
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("read %d messages, want %d", len(got), n)
	}
	checkSeqs(t, got, 1)
}

// Request waits for the answer on its inbox, says ErrNoReply when none
// comes, and allocates little: many requesters at once must not pay for a
// subscription's large buffer each time (SubscribeSync allocates 512 KiB).
func TestRequest(t *testing.T) {
	nc, js := connect(t, startTestServer(t).ClientURL())
	ensure(t, js, "RQ", "rq.>")
	// An answerer, as the runtime: it reads the requests' inboxes from
	// their headers, off the stream's subject.
	sub, err := nc.Subscribe("rq.>", func(m *nats.Msg) {
		if m.Subject == "rq.silent" {
			return
		}
		_ = nc.Publish(m.Header.Get(ReplyToHeader), append([]byte("re: "), m.Data...))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if reply, err := Request(ctx, js, "rq.a", nil, []byte("hi")); err != nil || string(reply.Data) != "re: hi" {
		t.Fatalf("Request = %v, %v; want re: hi", reply, err)
	}

	const n = 200
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	for range n {
		if _, err := Request(ctx, js, "rq.a", nil, []byte("hi")); err != nil {
			t.Fatal(err)
		}
	}
	goruntime.ReadMemStats(&after)
	// The server and both clients of the process allocate too: a few KiB
	// per request in all.
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 64<<10 {
		t.Errorf("a request allocated %d bytes in the process, want under 64 KiB", per)
	}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, err := Request(short, js, "rq.silent", nil, nil); !errors.Is(err, ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered Request = %v, want ErrNoReply and the deadline", err)
	}
}
