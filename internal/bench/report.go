package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run of one scenario in one mode.
type Result struct {
	Scenario  string `json:"scenario"`
	Mode      string `json:"mode"`
	Path      string `json:"path,omitempty"`    // w1, w2, w3: the ingress path
	Clients   int    `json:"clients,omitempty"` // w1, w2, w3: concurrent clients
	Addresses int    `json:"addresses"`
	Messages  int    `json:"messages"`
	Sends     int    `json:"sends"`
	Egress    int    `json:"egress_records"`

	PrefillSeconds    float64 `json:"prefill_seconds,omitempty"`
	Seconds           float64 `json:"seconds,omitempty"`
	MsgsPerSec        float64 `json:"msgs_per_sec,omitempty"`        // ingress messages
	InvocationsPerSec float64 `json:"invocations_per_sec,omitempty"` // ingress messages and those sent on
	PublishPerSec     float64 `json:"publish_per_sec,omitempty"`
	OfferedPerSec     float64 `json:"offered_per_sec,omitempty"`
	AchievedPerSec    float64 `json:"achieved_per_sec,omitempty"`

	// Cores used on average during the measured phase: the driver's
	// process (runtime, embedded NATS server, publishers) and the
	// function endpoint's.
	CoresRuntime  float64 `json:"cores_runtime,omitempty"`
	CoresFunction float64 `json:"cores_function,omitempty"`
	// Calls to the endpoint, and message invocations per call.
	Calls           int     `json:"calls,omitempty"`
	MessagesPerCall float64 `json:"messages_per_call,omitempty"`
	// The front door's durable writes: messages per write, and the mean
	// time of a write.
	MessagesPerWrite float64 `json:"messages_per_write,omitempty"`
	WriteMillis      float64 `json:"write_ms,omitempty"`

	Invoke *Latency `json:"publish_to_invocation_ms,omitempty"`
	// RoundTrip is, for w1, the time from a send to its acknowledgement;
	// for w2 and w3, from a request to its reply.
	RoundTrip     *Latency `json:"round_trip_ms,omitempty"`
	EgressLatency *Latency `json:"publish_to_egress_ms,omitempty"`

	Checkpoints CheckpointStats `json:"checkpoints"`
	PeakRSS     int64           `json:"peak_rss_bytes"`
	HeapPeak    int64           `json:"heap_peak_bytes"`
	HeapIdle    int64           `json:"heap_after_bytes"`

	Verified string `json:"verified,omitempty"`
	Error    string `json:"error,omitempty"`
}

func (r Result) fail(err error) Result {
	r.Error = err.Error()
	return r
}

// Latency is a distribution in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// CheckpointStats summarizes a run's checkpoints; times in milliseconds.
type CheckpointStats struct {
	Count       int     `json:"count"`
	PauseP50    float64 `json:"pause_p50_ms"`
	PauseP99    float64 `json:"pause_p99_ms"`
	PauseMax    float64 `json:"pause_max_ms"`
	DurationP50 float64 `json:"duration_p50_ms"`
	DurationP99 float64 `json:"duration_p99_ms"`
	BytesP50    float64 `json:"bytes_p50"`
	BytesMax    float64 `json:"bytes_max"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

// Report is the whole output.
type Report struct {
	Machine  Machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Options  Options   `json:"options"`
	Results  []Result  `json:"results"`
}

func machineInfo() Machine {
	m := Machine{CPUs: goruntime.NumCPU(), GoVersion: goruntime.Version(), OS: goruntime.GOOS + "/" + goruntime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (r *Report) failures() error {
	var errs []error
	for _, res := range r.Results {
		if res.Error != "" {
			errs = append(errs, fmt.Errorf("%s/%s%s (%d addresses): %s", res.Scenario, res.Mode, pathSuffix(res.Path), res.Addresses, res.Error))
		}
	}
	return errors.Join(errs...)
}

func (r *Report) print(out io.Writer) {
	fmt.Fprintf(out, "\nTwinflow end-to-end benchmark: %d CPUs (%s), %s, %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Started.Format(time.DateOnly))
	fmt.Fprintf(out, "function: remote endpoint process, %.0f%% of messages sent on, %.0f%% to exactly-once egress, %d-byte payloads\n",
		100*r.Options.SendFraction, 100*r.Options.EgressFraction, r.Options.PayloadSize)
	fmt.Fprintf(out, "modes: fsync = NATS fsyncs every JetStream write; default = NATS's 2-minute sync interval\n")
	section := func(title, header string, rows func(w io.Writer) int) {
		var b strings.Builder
		w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, header)
		if rows(w) == 0 {
			return
		}
		_ = w.Flush()
		fmt.Fprintf(out, "\n%s\n%s", title, b.String())
	}
	pick := func(scenarios ...string) []Result {
		var out []Result
		for _, res := range r.Results {
			if slices.Contains(scenarios, res.Scenario) {
				out = append(out, res)
			}
		}
		return out
	}
	section("Processing throughput (stream pre-filled, then the runtime started)",
		"mode\taddresses\tmessages\tsent on\tseconds\tmsgs/s\tinvocations/s\tmsgs/call\tcores rt+fn\tstate checked\t", func(w io.Writer) int {
			rows := pick("processing")
			for _, res := range rows {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.1f\t%s\t%s\t%.0f\t%s\t%s\t\n", res.Mode, res.Addresses, res.Messages, res.Sends,
					res.Seconds, rate(res.MsgsPerSec), rate(res.InvocationsPerSec), res.MessagesPerCall, cores(res), status(res))
			}
			return len(rows)
		})
	section("End-to-end throughput (async publishers and runtime together)",
		"mode\taddresses\tpublished\tpublish msgs/s\tend-to-end msgs/s\tmsgs/call\tcores rt+fn\tstate checked\t", func(w io.Writer) int {
			rows := pick("e2e")
			for _, res := range rows {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%.0f\t%s\t%s\t\n", res.Mode, res.Addresses, res.Messages,
					rate(res.PublishPerSec), rate(res.MsgsPerSec), res.MessagesPerCall, cores(res), status(res))
			}
			return len(rows)
		})
	section("Latency at a fixed offered load (ms)",
		"mode\taddresses\toffered msgs/s\tachieved\tinvoke p50\tp99\tp999\tegress p50\tp99\tp999\tmsgs/call\tcores rt+fn\t", func(w io.Writer) int {
			rows := pick("latency", "latency-hot")
			for _, res := range rows {
				if res.Invoke == nil || res.EgressLatency == nil {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t\t\t\t\t\t\t\t\t\n", res.Mode, res.Addresses, rate(res.OfferedPerSec), status(res))
					continue
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", res.Mode, res.Addresses,
					rate(res.OfferedPerSec), rate(res.AchievedPerSec), res.Invoke.P50, res.Invoke.P99, res.Invoke.P999,
					res.EgressLatency.P50, res.EgressLatency.P99, res.EgressLatency.P999, res.MessagesPerCall, cores(res))
			}
			return len(rows)
		})
	section("Workloads: keyed counter over the given keys, remote function; w1 one-way (round trip = until acknowledged), w2 and w3 request/response",
		"mode\tworkload\tpath\tclients\tkeys\tmessages\tacked/s\tapplied or replied/s\tround trip p50 ms\tp99\tp999\tmsgs/write\twrite ms\tmsgs/call\tcores rt+fn\tpeak RSS\tstate checked\t", func(w io.Writer) int {
			rows := pick("w1", "w2", "w3")
			for _, res := range rows {
				rt := res.RoundTrip
				if rt == nil {
					rt = &Latency{}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.0f\t%s\t%s\t%s\t\n", res.Mode, res.Scenario, res.Path, res.Clients,
					res.Addresses, res.Messages, rate(res.PublishPerSec), rate(res.MsgsPerSec), rt.P50, rt.P99, rt.P999,
					dash(res.MessagesPerWrite, "%.1f"), dash(res.WriteMillis, "%.2f"), res.MessagesPerCall, cores(res), size(float64(res.PeakRSS)), status(res))
			}
			return len(rows)
		})
	section("Checkpoints (every 1s; pause = longest shard stop per checkpoint)",
		"mode\tscenario\taddresses\tcount\tpause p50 ms\tp99\tmax\tduration p50 ms\tp99\tbytes p50\tmax\t", func(w io.Writer) int {
			n := 0
			for _, res := range r.Results {
				c := res.Checkpoints
				if c.Count == 0 {
					continue
				}
				n++
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%s\t%s\t\n", res.Mode, res.Scenario+pathSuffix(res.Path), res.Addresses, c.Count,
					c.PauseP50, c.PauseP99, c.PauseMax, c.DurationP50, c.DurationP99, size(c.BytesP50), size(c.BytesMax))
			}
			return n
		})
	section("Memory (runtime process: peak RSS since start; Go heap peak and after the work, less the driver's)",
		"mode\tscenario\taddresses\tmessages\tpeak RSS\theap peak\theap after\t", func(w io.Writer) int {
			rows := pick("processing", "memory")
			slices.SortStableFunc(rows, func(a, b Result) int { return a.Addresses - b.Addresses })
			for _, res := range rows {
				if res.PeakRSS == 0 {
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", res.Mode, res.Scenario, res.Addresses, res.Messages,
					size(float64(res.PeakRSS)), size(float64(res.HeapPeak)), size(float64(res.HeapIdle)))
			}
			return len(rows)
		})
	if err := r.failures(); err != nil {
		fmt.Fprintf(out, "\nFAILED:\n%v\n", err)
	}
}

func dash(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func pathSuffix(p string) string {
	if p == "" {
		return ""
	}
	return "/" + p
}

func cores(r Result) string {
	if r.CoresRuntime == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f+%.2f", r.CoresRuntime, r.CoresFunction)
}

func status(r Result) string {
	if r.Error != "" {
		return "FAILED"
	}
	return r.Verified
}

func rate(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 10_000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func size(v float64) string {
	switch {
	case v >= 1<<30 || v <= -(1<<30):
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20 || v <= -(1<<20):
		return fmt.Sprintf("%.0f MiB", v/(1<<20))
	case v >= 1<<10 || v <= -(1<<10):
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// quantile returns the q-quantile of xs by nearest rank.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
