package runtime

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/runtime/shard"
)

// Health checks. Liveness says the process works: every shard loop answers.
// Readiness says it does its job: function endpoints answer, ingress
// streams can be read, checkpoints complete, intake is not held back, and
// it is not stopping. Each problem comes with its reason; /readyz lists
// them, and /metrics counts them by check.

// Checks of readiness, as metric labels.
const (
	checkStopping   = "stopping"
	checkStarting   = "starting"
	checkEndpoint   = "endpoint"
	checkStream     = "stream"
	checkCheckpoint = "checkpoint"
	checkIntake     = "intake"
	checkDisk       = "disk"
)

// problem is one reason the runtime is not ready.
type problem struct {
	check  string
	reason string
}

// intakeGrace is how long intake may pause before readiness reports it:
// short pauses are the normal backpressure of a busy runtime.
const intakeGrace = 5 * time.Second

// readiness lists what keeps the runtime from doing its job; none when it
// is ready.
func (e *Engine) readiness() []problem {
	var out []problem
	select {
	case <-e.stopped:
		return []problem{{checkStopping, "stopped"}}
	default:
	}
	if err := e.DiskFull(); err != nil {
		out = append(out, problem{checkDisk, err.Error() + "; intake paused, queries answered, resuming when space returns"})
	}
	if e.finishing.Load() {
		out = append(out, problem{checkStopping, "stopping: intake is paused and the final checkpoint is being taken"})
	}
	pl := e.pl()
	if pl.coord == nil { // a cluster worker before its first pipeline
		return append(out, problem{checkStarting, "starting: the first pipeline is being built"})
	}
	now := time.Now()
	down := map[string]shard.EndpointDown{}
	for i, l := range pl.loops {
		st := l.Status()
		for _, d := range st.Unreachable {
			if old, ok := down[d.URL]; !ok || d.Since.Before(old.Since) {
				down[d.URL] = d
			}
		}
		if since, why := l.SaturatedSince(); !since.IsZero() && now.Sub(since) >= intakeGrace {
			out = append(out, problem{checkIntake, fmt.Sprintf("intake paused for %s by shard %d: %s",
				now.Sub(since).Round(time.Second), i, why)})
		}
	}
	urls := make([]string, 0, len(down))
	for u := range down {
		urls = append(urls, u)
	}
	slices.Sort(urls)
	for _, u := range urls {
		d := down[u]
		out = append(out, problem{checkEndpoint, fmt.Sprintf("endpoint %s unreachable for %s (its messages wait): %s",
			u, now.Sub(d.Since).Round(time.Second), d.LastError)})
	}
	for _, r := range pl.reads {
		if f := r.Failing(); f != nil {
			out = append(out, problem{checkStream, fmt.Sprintf("stream %s cannot be read for %s: %v",
				r.Name(), now.Sub(f.Since).Round(time.Second), f.Err)})
		}
	}
	if err, since := pl.coord.CommitError(); err != nil {
		out = append(out, problem{checkCheckpoint, fmt.Sprintf("writing checkpoints fails for %s: %v",
			now.Sub(since).Round(time.Second), err)})
	}
	last := e.started
	if man, _ := pl.coord.Latest(); man != nil && man.GetCompletedAtUnixMillis() > last.UnixMilli() {
		last = time.UnixMilli(man.GetCompletedAtUnixMillis())
	}
	if stale := e.checkpointStale(); now.Sub(last) > stale {
		out = append(out, problem{checkCheckpoint, fmt.Sprintf("no checkpoint completed for %s (interval %s)",
			now.Sub(last).Round(time.Second), e.cfg.CheckpointInterval)})
	}
	return out
}

// checkpointStale is how long without a complete checkpoint makes the
// runtime unready: ten intervals, and at least 10 s.
func (e *Engine) checkpointStale() time.Duration {
	return max(10*e.cfg.CheckpointInterval, 10*time.Second)
}

// live reports whether every shard loop answers within a second.
func (e *Engine) live(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for i, l := range e.pl().loops {
		if err := l.Do(ctx, func(*shard.Core) {}); err != nil {
			return fmt.Errorf("shard %d does not answer: %w", i, err)
		}
	}
	return nil
}

func (e *Engine) handleLive(w http.ResponseWriter, r *http.Request) {
	if err := e.live(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (e *Engine) handleReady(w http.ResponseWriter, _ *http.Request) {
	probs := e.readiness()
	if len(probs) == 0 {
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	var b strings.Builder
	b.WriteString("not ready:\n")
	for _, p := range probs {
		fmt.Fprintf(&b, "- %s: %s\n", p.check, p.reason)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(b.String()))
}

// readinessCollector exports readiness on /metrics: twinflow_ready, and the
// problems by check.
type readinessCollector struct {
	e        *Engine
	ready    *prometheus.Desc
	problems *prometheus.Desc
}

func newReadinessCollector(e *Engine) *readinessCollector {
	return &readinessCollector{
		e:     e,
		ready: prometheus.NewDesc("twinflow_ready", "1 when the runtime is ready (see /readyz), else 0.", nil, nil),
		problems: prometheus.NewDesc("twinflow_readiness_problems", "Problems that keep the runtime from being ready, by check.",
			[]string{"check"}, nil),
	}
}

func (c *readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.problems
}

func (c *readinessCollector) Collect(ch chan<- prometheus.Metric) {
	probs := c.e.readiness()
	ready := 1.0
	if len(probs) > 0 {
		ready = 0
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready)
	counts := map[string]int{checkStopping: 0, checkStarting: 0, checkEndpoint: 0, checkStream: 0, checkCheckpoint: 0, checkIntake: 0, checkDisk: 0}
	for _, p := range probs {
		counts[p.check]++
	}
	for check, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.problems, prometheus.GaugeValue, float64(n), check)
	}
}
