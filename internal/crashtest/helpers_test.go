package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
)

var seedFlag = flag.Uint64("crash.seed", 0, "seed of TestCrashRecovery's workload and fault schedule; 0 draws one")

var keepFlag = flag.String("crash.keep", "", "directory to copy the logs of the tests' processes to, a directory per test run")

// build is a set of binaries built once for all tests of the package.
type build struct {
	once               sync.Once
	dir                string
	twinflow, function string
	err                error
}

// bins are built with the race detector when the tests are; plainBins never
// are.
var bins, plainBins build

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	for _, b := range []*build{&bins, &plainBins} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

// binaries builds cmd/twinflow and cmd/crashfn, once. The runtime is built
// with the race detector when the tests are, so that a data race the
// crashes provoke in the engine fails the run (see raceEnabled).
func binaries(t testing.TB) (twinflow, function string) {
	return bins.get(t, raceEnabled)
}

// plainBinaries builds them without the race detector, whose bookkeeping
// would inflate what a test measures of the runtime (its memory).
func plainBinaries(t testing.TB) (twinflow, function string) {
	return plainBins.get(t, false)
}

func (b *build) get(t testing.TB, race bool) (twinflow, function string) {
	t.Helper()
	// twinflow run writes a pointer to itself for this user: keep the
	// test's runtimes out of the real one.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "crashtest-bin-")
		if b.err != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("the go tool is needed to build the binaries: %w", err)
			return
		}
		start := time.Now()
		args := []string{"build", "-o", b.dir + string(filepath.Separator)}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "github.com/twinflow/twinflow/cmd/twinflow", "github.com/twinflow/twinflow/internal/crashtest/cmd/crashfn")
		out, err := exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		b.twinflow = filepath.Join(b.dir, "twinflow")
		b.function = filepath.Join(b.dir, "crashfn")
		t.Logf("built the binaries in %v (runtime race detector: %v)", time.Since(start).Round(time.Millisecond), race)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.twinflow, b.function
}

// freePort returns a TCP port on loopback that was free a moment ago. The
// processes get fixed ports so that they come back where clients reconnect.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a child process that can be killed and started again with
// the same arguments. Its output is appended to one log file.
type process struct {
	name string
	bin  string
	args []string
	log  string

	cmd    *exec.Cmd
	done   chan struct{} // closed when the current run has exited
	starts int
}

func newProcess(t testing.TB, name, bin string, args ...string) *process {
	p := &process{name: name, bin: bin, args: args, log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.kill()
		if *keepFlag != "" && p.starts > 0 {
			if err := copyFile(p.log, filepath.Join(*keepFlag, filepath.Base(filepath.Dir(filepath.Dir(p.log))), name+".log")); err != nil {
				t.Errorf("keeping %s's log: %v", name, err)
			}
		}
	})
	return p
}

func (p *process) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "==== start %d at %s: %s %s\n", p.starts, time.Now().Format("15:04:05.000"), p.name, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// exited reports whether the current run has ended by itself.
func (p *process) exited() bool {
	if p.cmd == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit by itself.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.done:
		p.cmd = nil
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s did not exit: %w", p.name, ctx.Err())
	}
}

// tail returns the last n lines of the log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grep returns the lines of the log that contain s.
func (p *process) grep(s string) []string {
	f, err := os.Open(p.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// after returns the first line of the log that contains s and the n lines
// after it: a data race's report, say, which the log's tail may not show.
func (p *process) after(s string, n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, s) {
			return strings.Join(lines[i:min(len(lines), i+n+1)], "\n")
		}
	}
	return ""
}

// checkClean fails t if the log shows a data race or a panic, recovered
// ones included (net/http's "http: panic serving" of a handler's).
func (p *process) checkClean(t testing.TB) {
	t.Helper()
	if races := p.grep("WARNING: DATA RACE"); len(races) > 0 {
		t.Errorf("the race detector reported %d data races in %s; the first:\n%s", len(races), p.name, p.after("WARNING: DATA RACE", 60))
	}
	if panics := append(p.grep("panic:"), p.grep("http: panic serving")...); len(panics) > 0 {
		t.Errorf("%s panicked %d times; the first:\n%s", p.name, len(panics), p.after(panics[0], 30))
	}
}

// digest summarizes the log for a failed test, whose output CI may cut:
// the first data race and panic, the last warnings and errors, and the
// last lines.
func (p *process) digest() string {
	if p.starts == 0 {
		return "never started"
	}
	var b strings.Builder
	for _, s := range []string{"WARNING: DATA RACE", "panic"} {
		if found := p.after(s, 50); found != "" {
			fmt.Fprintf(&b, "first %q:\n%s\n", s, found)
		}
	}
	var notable []string
	for _, l := range strings.Split(p.tail(1<<30), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "====") {
			notable = append(notable, l)
		}
	}
	fmt.Fprintf(&b, "last warnings and errors (%d in all):\n%s\n", len(notable), strings.Join(notable[max(0, len(notable)-30):], "\n"))
	fmt.Fprintf(&b, "last lines:\n%s", p.tail(15))
	return b.String()
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// ready polls check until it succeeds, the process exits, or the bound
// passes.
func (p *process) ready(ctx context.Context, bound time.Duration, check func() error) error {
	deadline := time.Now().Add(bound)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited while starting; its log ends with:\n%s", p.name, p.tail(30))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready after %v: %v; its log ends with:\n%s", p.name, bound, err, p.tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runtimeProc is a twinflow run process with its fixed ports.
type runtimeProc struct {
	*process
	dataDir  string
	natsURL  string
	adminURL string
}

// runtimeArgs are the flags of twinflow run for the tests.
func newRuntime(t testing.TB, bin, config, dataDir string, extra ...string) *runtimeProc {
	natsPort, adminPort := freePort(t), freePort(t)
	args := append([]string{"run", "-config", config, "-data", dataDir,
		"-nats-port", strconv.Itoa(natsPort), "-admin", "127.0.0.1:" + strconv.Itoa(adminPort),
		"-checkpoint-interval", "100ms", "-shards", "2", "-memory", "256MiB", "-log-level", "info"}, extra...)
	return &runtimeProc{
		process:  newProcess(t, "twinflow", bin, args...),
		dataDir:  dataDir,
		natsURL:  fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		adminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort),
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// startReady starts the runtime and waits until its admin API answers and
// it has written its runtime file, which clients read.
func (r *runtimeProc) startReady(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	return r.ready(ctx, 30*time.Second, func() error {
		resp, err := httpClient.Get(r.adminURL + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		info, err := runinfo.Read(r.dataDir)
		if err != nil {
			return err
		}
		if info.PID != r.cmd.Process.Pid {
			return fmt.Errorf("the runtime file is process %d's, not %d's", info.PID, r.cmd.Process.Pid)
		}
		return nil
	})
}

// access is how clients reach the runtime, from the runtime file it
// wrote.
func (r *runtimeProc) access(t *testing.T) runinfo.Info { return r.accessTB(t) }

// accessTB is access for tests and benchmarks.
func (r *runtimeProc) accessTB(t testing.TB) runinfo.Info {
	t.Helper()
	info, err := runinfo.Read(r.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// admin is an admin API client that sends the data dir's token.
func (r *runtimeProc) admin() twinflowv1connect.AdminServiceClient {
	return adminClient(r.adminURL, r.dataDir)
}

func adminClient(url, dataDir string) twinflowv1connect.AdminServiceClient {
	tokenFile := filepath.Join(dataDir, secrets.DirName, "admin.token")
	hc := &http.Client{Timeout: httpClient.Timeout, Transport: &runinfo.Bearer{Next: http.DefaultTransport,
		Token: func() (string, error) { return secrets.ReadAdminToken(tokenFile) }}}
	return twinflowv1connect.NewAdminServiceClient(hc, url)
}

// functionProc is a crashfn process on a fixed port.
type functionProc struct {
	*process
	addr string
}

func newFunction(t testing.TB, bin string) *functionProc {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	return &functionProc{process: newProcess(t, "crashfn", bin, "-listen", addr), addr: addr}
}

func (f *functionProc) startReady(ctx context.Context) error {
	if err := f.start(); err != nil {
		return err
	}
	return f.ready(ctx, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", f.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// writeModule writes the module spec: crash/* served by the function
// process, and the exactly-once egress "verify".
// startFunction starts the crash workload's function endpoint and
// writes a module that points at it; it returns the module's path.
func startFunction(ctx context.Context, t testing.TB, functionBin string) string {
	t.Helper()
	fn := newFunction(t, functionBin)
	if err := fn.startReady(ctx); err != nil {
		t.Fatal(err)
	}
	return writeModule(t, fn.addr)
}

func writeModule(t testing.TB, functionAddr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "module.yaml")
	spec := fmt.Sprintf(`endpoints:
  - functions: crash/*
    url: http://%s
    timeout: 5s
egresses:
  - name: %s
    subject: %s
    delivery: exactly-once
`, functionAddr, Egress, EgressSubject)
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// driver publishes commands to the direct ingress as the client identity,
// and reads the streams to check them as the runtime's identity (ops).
type driver struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	ops jetstream.JetStream
	pub *natsbus.Publisher
}

// newDriver connects to NATS. The connections reconnect forever, so the
// driver outlives the runtime's crashes.
func newDriver(t *testing.T, info runinfo.Info, log *slog.Logger) *driver {
	t.Helper()
	nc, js, err := natsbus.Connect(natsbus.ConnOptions{URL: info.NATSURL, CredsFile: info.NATSCreds, InboxPrefix: info.NATSInboxPrefix,
		Name: "crashtest-driver", ReconnectWait: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	opsConn, ops, err := natsbus.Connect(natsbus.ConnOptions{URL: info.NATSURL, CredsFile: filepath.Join(info.DataDir, secrets.DirName, "runtime.nk"),
		InboxPrefix: runtime.RuntimeInboxPrefix, Name: "crashtest-ops", ReconnectWait: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(opsConn.Close)
	return &driver{nc: nc, js: js, ops: ops, pub: natsbus.NewPublisher(js, natsbus.PublisherOptions{AckTimeout: 2 * time.Second, Logger: log})}
}

// publish publishes commands and waits until JetStream has stored every
// one. Each carries its command id as message id, so that JetStream drops
// the repeat of a publish whose acknowledgement a crash lost.
func (d *driver) publish(ctx context.Context, cmds []Ingress) error {
	recs := make([]natsbus.Record, len(cmds))
	for i, c := range cmds {
		subject, err := router.DirectSubject(FunctionType, c.To)
		if err != nil {
			return err
		}
		data, err := json.Marshal(c.Cmd)
		if err != nil {
			return err
		}
		recs[i] = natsbus.Record{
			Subject: subject,
			Header:  nats.Header{router.TypenameHeader: {CommandType.Typename()}},
			Data:    data,
			MsgID:   c.Cmd.ID,
		}
	}
	return d.pub.Publish(ctx, recs)
}

// states are the count and msgs of addresses as the query API shows them.
type states map[string][2]int64

// readStates reads count and msgs of every address through the query API.
func readStates(ctx context.Context, admin twinflowv1connect.AdminServiceClient, addresses []string) (states, error) {
	out := make(states, len(addresses))
	for _, a := range addresses {
		resp, err := admin.GetState(ctx, connect.NewRequest(&twinflowv1.GetStateRequest{
			Address: &twinflowv1.Address{Type: FunctionType, Id: a},
		}))
		if err != nil {
			return nil, fmt.Errorf("state of %s: %w", a, err)
		}
		var v [2]int64
		for _, sv := range resp.Msg.GetValues() {
			n, err := strconv.ParseInt(string(sv.GetValue().GetValue()), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("state %s of %s: %w", sv.GetName(), a, err)
			}
			switch sv.GetName() {
			case Count.Name:
				v[0] = n
			case Msgs.Name:
				v[1] = n
			}
		}
		out[a] = v
	}
	return out, nil
}

// pendingDelayed lists the addresses that have delayed messages pending,
// as the query API describes them, with the first of them. Asked of the
// workers of a cluster, it asks each: only the owner of a key group holds
// its delayed messages.
func pendingDelayed(ctx context.Context, admins []twinflowv1connect.AdminServiceClient, addresses []string) ([]string, error) {
	var out []string
	for _, a := range addresses {
		n, truncated, first := 0, false, (*twinflowv1.DelayedInfo)(nil)
		for _, admin := range admins {
			resp, err := admin.DescribeAddress(ctx, connect.NewRequest(&twinflowv1.DescribeAddressRequest{
				Address: &twinflowv1.Address{Type: FunctionType, Id: a},
			}))
			if err != nil {
				return nil, fmt.Errorf("describing %s: %w", a, err)
			}
			if d := resp.Msg.GetDelayed(); len(d) > 0 && first == nil {
				first = d[0]
			}
			n += len(resp.Msg.GetDelayed())
			truncated = truncated || resp.Msg.GetDelayedTruncated()
		}
		switch {
		case first != nil:
			out = append(out, fmt.Sprintf("%s: %d pending, the first to %s with token %q due in %v: %s", a, n,
				first.GetTarget().GetId(), first.GetCancellationToken(), time.Until(time.UnixMilli(first.GetDueUnixMillis())).Round(time.Second), first.GetJson()))
		case truncated:
			out = append(out, fmt.Sprintf("%s: its key group has too many delayed messages to look through", a))
		}
	}
	return out, nil
}

// diffStates lists the addresses whose states differ from the model, and
// by how much.
func diffStates(w *Workload, got states) []string {
	var out []string
	for _, a := range w.Addresses {
		g, wantC, wantM := got[a], w.Count[a], w.Msgs[a]
		if g[0] == wantC && g[1] == wantM {
			continue
		}
		out = append(out, fmt.Sprintf("%s: count %d, want %d (%+d); msgs %d, want %d (%+d)",
			a, g[0], wantC, g[0]-wantC, g[1], wantM, g[1]-wantM))
	}
	return out
}

// summarize keeps a report readable: the first n lines and how many more.
func summarize(lines []string, n int) string {
	if len(lines) <= n {
		return strings.Join(lines, "\n")
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n... and %d more", len(lines)-n)
}

// streamMsgs reads a stream from its start up to its last sequence at the
// time of the call.
func streamMsgs(ctx context.Context, js jetstream.JetStream, stream string) ([]natsbus.Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if last == 0 {
		return nil, nil
	}
	r, err := natsbus.NewReader(ctx, js, stream, 0, natsbus.ReaderOptions{MaxWait: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []natsbus.Msg
	for len(out) == 0 || out[len(out)-1].Seq < last {
		msgs, err := r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", stream, err)
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// egressIDs reads the egress stream and counts the records by id.
func egressIDs(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	msgs, err := streamMsgs(ctx, js, "TWINFLOW_EGRESS_"+Egress)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]int, len(msgs))
	for _, m := range msgs {
		var rec Record
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			return nil, fmt.Errorf("egress record %d: %w: %q", m.Seq, err, m.Data)
		}
		ids[rec.ID]++
	}
	return ids, nil
}

// diffEgress lists expected ids that are missing or repeated, and ids that
// should not exist.
func diffEgress(w *Workload, got map[string]int) []string {
	var out []string
	for id := range w.Egress {
		if n := got[id]; n != 1 {
			out = append(out, fmt.Sprintf("%s: published %d times, want once", id, n))
		}
	}
	for id, n := range got {
		switch {
		case w.Egress[id]:
		case w.Cancelled[id]:
			out = append(out, fmt.Sprintf("%s: published %d times by a delayed message that was cancelled", id, n))
		default:
			out = append(out, fmt.Sprintf("%s: published %d times, not in the workload", id, n))
		}
	}
	slices.Sort(out)
	return out
}

// deadLetters describes the messages on the dead-letter stream.
func deadLetters(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	msgs, err := streamMsgs(ctx, js, "TWINFLOW_DLQ")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s target=%s error=%q data=%s", m.Subject,
			m.Header.Get("Twinflow-Target"), m.Header.Get("Twinflow-Error"), bytes.TrimSpace(m.Data)))
	}
	return out, nil
}

// logTo returns a logger writing to a file in the test's temp dir.
func logTo(t testing.TB, name string) (*slog.Logger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})), path
}
