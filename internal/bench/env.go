package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/twinflow/twinflow/internal/bench/benchfn"
	"github.com/twinflow/twinflow/internal/bench/workload"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

// function is the endpoint process.
type function struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	http  *http.Client
}

// startFunction starts benchfn and reads its URL.
func startFunction(ctx context.Context, path string, stderr io.Writer) (*function, error) {
	path, err := functionBinary(ctx, path, stderr)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s printed no URL: %w", path, err)
	}
	return &function{cmd: cmd, stdin: stdin, url: strings.TrimSpace(line), http: &http.Client{Timeout: 10 * time.Second}}, nil
}

// functionBinary returns the benchfn binary: the given path, the one next
// to this executable, or one built now.
func functionBinary(ctx context.Context, path string, stderr io.Writer) (string, error) {
	if path != "" {
		return path, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "benchfn")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.MkdirTemp("", "twinflow-bench-fn")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "benchfn")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", p, "github.com/twinflow/twinflow/internal/bench/cmd/benchfn")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building benchfn (pass -fn, or run from the module): %w", err)
	}
	return p, nil
}

func (f *function) close() {
	_ = f.stdin.Close()
	done := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = f.cmd.Process.Kill()
		<-done
	}
}

func (f *function) reset() error {
	resp, err := f.http.Post(f.url+"/reset", "", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// profile starts (POST, into file) or stops (DELETE) a CPU profile of the
// endpoint.
func (f *function) profile(method, file string) error {
	req, err := http.NewRequest(method, f.url+"/profile?file="+url.QueryEscape(file), nil)
	if err != nil {
		return err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s /profile: %s", method, strings.TrimSpace(string(b)))
	}
	return nil
}

func (f *function) stats() (benchfn.StatsJSON, error) {
	var s benchfn.StatsJSON
	resp, err := f.http.Get(f.url + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// module serves bench/* from the function endpoint with the spec's
// default batch limits, and declares the exactly-once egress.
func module(url string) *spec.Module {
	return &spec.Module{
		Endpoints: []spec.Endpoint{{
			Functions: "bench/*", URL: url, Timeout: spec.DefaultTimeout,
			MaxBatchAddresses: spec.DefaultMaxBatchAddresses, MaxBatchMessages: spec.DefaultMaxBatchMessages,
			MaxInFlight: spec.DefaultMaxInFlight,
		}},
		Egresses: []router.EgressRule{{Name: workload.Egress, Subject: workload.EgressSubject, Delivery: router.ExactlyOnce}},
	}
}

// directStream is the runtime's direct-ingress stream, as the engine
// creates it (the same spec, so that the engine finds nothing to change).
var directStream = natsbus.StreamSpec{
	Name:            runtime.DirectStream,
	Subjects:        router.DirectStreamSubjects,
	DuplicateWindow: 10 * time.Minute,
}

// env is one running engine with the driver's connections to it.
type env struct {
	d     *driver
	dir   string
	e     *runtime.Engine
	pub   *pubConn
	http  *http.Client
	admin twinflowv1connect.AdminServiceClient

	baseHeap uint64 // live heap before the engine started
	// atLeast checks that each address's count is at least the one
	// expected, not equal to it: requests cut short at the end of a run
	// may be applied without the driver having counted them.
	atLeast bool
	stop    chan struct{}
	sampled sync.WaitGroup
	mu      struct {
		sync.Mutex
		checkpoints map[uint64]*twinflowv1.CheckpointInfo
		heapPeak    uint64
	}
}

// startEngine starts the runtime on dir, after resetting the process's
// peak RSS and measuring its heap, so that both are the engine's.
func (d *driver) startEngine(ctx context.Context, dir string, mode Mode) (*env, error) {
	goruntime.GC()
	debug.FreeOSMemory()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	resetPeakRSS()
	cfg := runtime.Config{
		DataDir:            dir,
		Module:             module(d.fn.url),
		NATSPort:           -1,
		NATSSyncInterval:   mode.Sync,
		AdminAddr:          "127.0.0.1:0",
		Shards:             d.o.Shards,
		CheckpointInterval: d.o.Checkpoints,
		FrontDoor:          frontdoor.Limits{MaxWrites: d.o.DoorWrites, Linger: d.o.DoorLinger},
		Logger:             d.log.With("component", "runtime"),
	}
	e, err := runtime.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// As twinflow run does: the Go heap gets what Pebble leaves.
	debug.SetMemoryLimit(e.Budget().GoMemoryLimit())
	v := &env{d: d, dir: dir, e: e, baseHeap: ms.HeapAlloc, stop: make(chan struct{})}
	v.mu.checkpoints = map[uint64]*twinflowv1.CheckpointInfo{}
	// The driver is a client: the client identity publishes, and admin
	// calls carry the token.
	access := e.Access()
	v.http = &http.Client{Transport: &runinfo.Bearer{Next: &http.Transport{MaxIdleConnsPerHost: 64},
		Token: func() (string, error) { return secrets.ReadAdminToken(access.AdminTokenFile) }}, Timeout: 30 * time.Second}
	v.admin = twinflowv1connect.NewAdminServiceClient(v.http, e.AdminURL())
	v.pub, err = dialPublisher(access.NATSURL, access.NATSCreds, access.NATSInboxPrefix, d.log)
	if err != nil {
		e.Kill()
		return nil, err
	}
	v.sampled.Add(1)
	go v.sample()
	return v, nil
}

// sample records the heap's peak every 50ms and the checkpoints every
// second, until the env stops.
func (v *env) sample() {
	defer v.sampled.Done()
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
		metrics.Read(heap)
		h := heap[0].Value.Uint64()
		v.mu.Lock()
		v.mu.heapPeak = max(v.mu.heapPeak, h)
		v.mu.Unlock()
		if i%20 == 19 {
			v.pollCheckpoints()
		}
	}
}

func (v *env) pollCheckpoints() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := v.admin.ListCheckpoints(ctx, connect.NewRequest(&twinflowv1.ListCheckpointsRequest{}))
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, c := range resp.Msg.GetCheckpoints() {
		v.mu.checkpoints[c.GetId()] = c
	}
}

// checkpointStats summarizes the checkpoints completed so far.
func (v *env) checkpointStats() CheckpointStats {
	v.pollCheckpoints()
	v.mu.Lock()
	defer v.mu.Unlock()
	var pause, dur, size []float64
	for _, c := range v.mu.checkpoints {
		pause = append(pause, c.GetPauseMillis())
		dur = append(dur, c.GetDurationMillis())
		size = append(size, float64(c.GetBytes()))
	}
	s := CheckpointStats{Count: len(pause)}
	if len(pause) == 0 {
		return s
	}
	s.PauseP50, s.PauseP99, s.PauseMax = quantile(pause, 0.5), quantile(pause, 0.99), quantile(pause, 1)
	s.DurationP50, s.DurationP99 = quantile(dur, 0.5), quantile(dur, 0.99)
	s.BytesP50, s.BytesMax = quantile(size, 0.5), quantile(size, 1)
	return s
}

// memory returns the process's peak RSS since the engine started, its
// peak heap, and its live heap now, less what the driver held before.
func (v *env) memory(name string) (peakRSS, heapPeak, heapLive int64) {
	goruntime.GC()
	if v.d.o.MemProfile != "" {
		if f, err := os.Create(v.d.o.MemProfile + "-" + name); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	v.mu.Lock()
	peak := v.mu.heapPeak
	v.mu.Unlock()
	return readPeakRSS(), int64(peak) - int64(v.baseHeap), int64(ms.HeapAlloc) - int64(v.baseHeap)
}

// close stops the engine (cleanly, with a final checkpoint) and removes
// its data.
func (v *env) close() {
	close(v.stop)
	v.sampled.Wait()
	v.pub.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := v.e.Stop(ctx, ""); err != nil {
		v.d.log.Warn("stopping the engine", "err", err)
	}
	_ = os.RemoveAll(v.dir)
}

// metrics reads /metrics: series (name with labels) → value, and name →
// the sum of its series.
func (v *env) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.e.AdminURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		f, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		series := string(line[:i])
		out[series] = f
		// A labelled series also counts towards its name alone: the sum
		// over its labels.
		if name, _, labelled := strings.Cut(series, "{"); labelled {
			out[name] += f
		}
	}
	return out, nil
}

func (v *env) metric(ctx context.Context, name string) (float64, error) {
	m, err := v.metrics(ctx)
	if err != nil {
		return 0, err
	}
	return m[name], nil
}

// waitInvocations waits until the engine has applied want messages. It
// fails when nothing moves for a minute.
func (v *env) waitInvocations(ctx context.Context, want float64) error {
	var last float64
	moved := time.Now()
	for {
		n, err := v.metric(ctx, "twinflow_invocations_total")
		if err != nil {
			return err
		}
		switch {
		case n >= want:
			if n > want {
				return fmt.Errorf("%.0f messages applied, %.0f expected", n, want)
			}
			return nil
		case n > last:
			last, moved = n, time.Now()
		case time.Since(moved) > time.Minute:
			return fmt.Errorf("stuck at %.0f of %.0f messages applied", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitAtLeast waits until the engine has applied at least want messages.
func (v *env) waitAtLeast(ctx context.Context, want float64) error {
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := v.metric(ctx, "twinflow_invocations_total")
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%.0f messages applied after a minute, want at least %.0f", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCheckpoint waits for a checkpoint that starts after now to complete.
func (v *env) waitCheckpoint(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := v.e.Checkpoint(ctx)
	return err
}

// egressStored waits until the egress stream holds want records and
// returns how many it holds.
func (v *env) egressStored(ctx context.Context, want int) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := v.pub.js.Stream(ctx, "TWINFLOW_EGRESS_"+workload.Egress)
		if err != nil {
			return 0, err
		}
		n := int(s.CachedInfo().State.Msgs)
		if n >= want || time.Now().After(deadline) {
			return n, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verify checks the addresses' counts through the query API: all of them,
// or an evenly spread sample of 5000 when there are more than 20000.
func (v *env) verify(ctx context.Context, counts []int32) (string, error) {
	idx := make([]int, 0, min(len(counts), 20000))
	if len(counts) <= 20000 {
		for k := range counts {
			idx = append(idx, k)
		}
	} else {
		step := len(counts) / 5000
		for k := 0; k < len(counts) && len(idx) < 5000; k += step {
			idx = append(idx, k)
		}
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for k := range work {
				got, err := v.count(ctx, workload.ID(k))
				if err == nil && (got != int64(counts[k]) && !v.atLeast || got < int64(counts[k])) {
					err = fmt.Errorf("address %s: count %d, want %d", workload.ID(k), got, counts[k])
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for _, k := range idx {
		work <- k
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return "", err
	default:
	}
	if len(idx) == len(counts) {
		return fmt.Sprintf("all %d", len(idx)), nil
	}
	return fmt.Sprintf("sample of %d", len(idx)), nil
}

func (v *env) count(ctx context.Context, id string) (int64, error) {
	resp, err := v.admin.GetState(ctx, connect.NewRequest(&twinflowv1.GetStateRequest{
		Address: &twinflowv1.Address{Type: workload.FunctionType, Id: id},
	}))
	if err != nil {
		return 0, err
	}
	for _, s := range resp.Msg.GetValues() {
		if s.GetName() == workload.CountState {
			return strconv.ParseInt(string(s.GetValue().GetValue()), 10, 64)
		}
	}
	return 0, nil
}

// resetPeakRSS resets the process's VmHWM to its current RSS (Linux).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// readPeakRSS returns VmHWM in bytes, 0 when unknown.
func readPeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// cpuTime returns the CPU time (user and system) a process has used, 0 when
// unknown (Linux only).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// its end. utime and stime are fields 14 and 15, in clock ticks.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const ticks = 100 // USER_HZ
	return time.Duration(u+st) * time.Second / ticks
}

// cpuMark is a moment's CPU times of the driver's process (engine, NATS
// server, publishers) and of the function endpoint.
type cpuMark struct {
	at         time.Time
	driver, fn time.Duration
}

func (d *driver) cpuMark() cpuMark {
	return cpuMark{at: time.Now(), driver: cpuTime(os.Getpid()), fn: cpuTime(d.fn.cmd.Process.Pid)}
}

// cores returns the cores each process used on average since m.
func (d *driver) cores(m cpuMark) (driver, function float64) {
	el := time.Since(m.at).Seconds()
	n := d.cpuMark()
	return (n.driver - m.driver).Seconds() / el, (n.fn - m.fn).Seconds() / el
}
