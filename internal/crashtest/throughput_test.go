package crashtest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/runtime/cluster"
	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// throughputCommands is the size of BenchmarkClusterThroughput's workload:
// commands with sends but no delayed messages, so that the run is bound by
// processing, not by timers.
const throughputCommands = 4000

// BenchmarkClusterThroughput measures the crash workload's throughput on
// one process with its embedded NATS server (single), and on 1, 2 and 3
// cluster workers over a three-server NATS cluster: the whole workload is
// published at once, and the clock stops when the workers have applied
// every message. It reports messages per second, the CPU seconds of the
// workers and of the NATS servers per thousand messages (single mode's
// NATS server is inside its process), and the bytes
// written to the changelogs per checkpoint. Run it with -benchtime 1x
// (make bench does), without the race detector.
func BenchmarkClusterThroughput(b *testing.B) {
	w := Generate(7, Options{Commands: throughputCommands, Addresses: 1000, MaxDepth: 2, NoLateCancels: true})
	for _, workers := range []int{0, 1, 2, 3} {
		name := "single"
		if workers > 0 {
			name = fmt.Sprintf("workers=%d", workers)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				runThroughput(b, w, workers)
			}
		})
	}
}

func runThroughput(b *testing.B, w *Workload, workers int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	twinflowBin, functionBin := plainBinaries(b)
	module := startFunction(ctx, b, functionBin)
	var procs []*runtimeProc
	var natsPIDs []int
	var pub *natsbus.Publisher
	log, _ := logTo(b, "driver.log")
	if workers == 0 {
		// The same checkpoint interval as the workers'.
		rt := newRuntime(b, twinflowBin, module, b.TempDir(), "-checkpoint-interval", "200ms")
		if err := rt.startReady(ctx); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, rt)
		pub = newDriverPublisher(b, rt)
	} else {
		// Every write fsynced, as the embedded server of single mode does.
		nats3 := clustertest.StartWith(b, clustertest.Options{SyncAlways: true})
		for i := range clustertest.Size {
			natsPIDs = append(natsPIDs, nats3.PID(i))
		}
		for i := range workers {
			wk := newWorker(b, twinflowBin, module, nats3.URLs(), i)
			if err := wk.startReady(ctx); err != nil {
				b.Fatal(err)
			}
			procs = append(procs, wk)
		}
		_, js := nats3.Connect(b)
		cl, err := cluster.Attach(ctx, js, clusterName)
		if err != nil {
			b.Fatal(err)
		}
		// Publish once every key group is where the assignment puts it:
		// a move would drop work and repeat it.
		for {
			st, err := cl.Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if settled(st, workers) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		pub = natsbus.NewPublisher(js, natsbus.PublisherOptions{AckTimeout: 5 * time.Second, Logger: log})
	}
	cpu0 := cpuSeconds(b, procs, natsPIDs)
	bytes0, commits0 := clusterCommits(procs)
	start := time.Now()
	for i := 0; i < len(w.Commands); i += 500 {
		if err := publishCommands(ctx, pub, w.Commands[i:min(i+500, len(w.Commands))]); err != nil {
			b.Fatal(err)
		}
	}
	for invocations(procs) < w.Messages() {
		if time.Since(start) > 4*time.Minute {
			b.Fatalf("%d of %d messages applied after 4 minutes", invocations(procs), w.Messages())
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu1 := cpuSeconds(b, procs, natsPIDs)
	bytes1, commits1 := clusterCommits(procs)
	b.StopTimer()
	got, err := readClusterStates(ctx, procs, w.Addresses)
	if err != nil {
		b.Fatal(err)
	}
	if diff := diffStates(w, got); len(diff) > 0 {
		b.Fatalf("%d addresses differ from exactly-once:\n%s", len(diff), summarize(diff, 20))
	}
	msgs := float64(w.Messages())
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric((cpu1[0]-cpu0[0])/msgs*1000, "worker-cpu-s/1k-msgs")
	b.ReportMetric((cpu1[1]-cpu0[1])/msgs*1000, "nats-cpu-s/1k-msgs")
	b.ReportMetric((cpu1[0]+cpu1[1]-cpu0[0]-cpu0[1])/msgs*1000, "total-cpu-s/1k-msgs")
	if commits1 > commits0 {
		b.ReportMetric((bytes1-bytes0)/(commits1-commits0), "changelog-B/checkpoint")
	}
	b.ReportMetric(0, "ns/op")
}

// newDriverPublisher publishes to a single runtime's embedded NATS server
// with its client credentials.
func newDriverPublisher(b *testing.B, rt *runtimeProc) *natsbus.Publisher {
	info := rt.accessTB(b)
	log, _ := logTo(b, "publisher.log")
	_, js, err := natsbus.Connect(natsbus.ConnOptions{URL: info.NATSURL, CredsFile: info.NATSCreds, InboxPrefix: info.NATSInboxPrefix,
		Name: "throughput-driver", Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	return natsbus.NewPublisher(js, natsbus.PublisherOptions{AckTimeout: 5 * time.Second, Logger: log})
}

// settled reports whether every key group is held by the worker the
// assignment gives it to, among the expected number of workers.
func settled(st cluster.Status, workers int) bool {
	if len(st.Members) != workers {
		return false
	}
	for _, g := range st.Groups {
		if g.Holder.Worker == "" || g.Holder.Worker != g.Assigned {
			return false
		}
	}
	return true
}

// cpuSeconds returns the CPU time (user and system) of the workers and of
// the NATS servers, from /proc.
func cpuSeconds(b *testing.B, procs []*runtimeProc, natsPIDs []int) [2]float64 {
	var out [2]float64
	for _, p := range procs {
		out[0] += procCPU(b, p.cmd.Process.Pid)
	}
	for _, pid := range natsPIDs {
		out[1] += procCPU(b, pid)
	}
	return out
}

func procCPU(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of process %d: %v", pid, err)
	}
	// The fields after the command name (in parentheses): utime and stime
	// are the 14th and 15th fields of the line.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // clock ticks of USER_HZ, 100 on Linux
}

// invocations sums the messages applied by the workers, from their
// metrics.
func invocations(procs []*runtimeProc) int64 {
	var n float64
	for _, p := range procs {
		n += metricSum(p.adminURL, "twinflow_invocations_total")
	}
	return int64(n)
}

// clusterCommits sums the bytes written to the changelogs and the
// checkpoints that wrote them.
func clusterCommits(procs []*runtimeProc) (bytes, commits float64) {
	for _, p := range procs {
		bytes += metricSum(p.adminURL, "twinflow_cluster_commit_bytes_total")
		commits += metricSum(p.adminURL, "twinflow_cluster_commits_total")
	}
	return bytes, commits
}

// metricSum adds up the samples of a metric on a runtime's /metrics.
func metricSum(adminURL, name string) float64 {
	resp, err := httpClient.Get(adminURL + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}
