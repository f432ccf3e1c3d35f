package bench

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinflow/twinflow/internal/bench/workload"
)

func (d *driver) plan(addresses, messages int) workload.Plan {
	return workload.Plan{
		Addresses: addresses, Messages: messages,
		SendFraction: d.o.SendFraction, EgressFraction: d.o.EgressFraction, Seed: d.o.Seed,
	}
}

// processing measures how fast the engine works off a filled stream.
func (d *driver) processing(ctx context.Context, mode Mode, scenario string, addresses, messages int) (res Result) {
	res = Result{Scenario: scenario, Mode: mode.Name, Addresses: addresses, Messages: messages}
	plan := d.plan(addresses, messages)
	dir, err := os.MkdirTemp("", "twinflow-bench")
	if err != nil {
		return res.fail(err)
	}
	defer os.RemoveAll(dir)
	d.progress("%s/%s: pre-filling %d messages over %d addresses", scenario, mode.Name, messages, addresses)
	t := time.Now()
	if err := d.prefill(ctx, dir, plan, messages); err != nil {
		return res.fail(fmt.Errorf("pre-filling: %w", err))
	}
	res.PrefillSeconds = time.Since(t).Seconds()
	counts, sends, egress := plan.Expected(messages)
	res.Sends, res.Egress = sends, egress
	stop := d.profile(fmt.Sprintf("%s-%s-%d", scenario, mode.Name, addresses))
	v, err := d.startEngine(ctx, dir, mode)
	if err != nil {
		stop()
		return res.fail(err)
	}
	defer v.close()
	start, cpu := time.Now(), d.cpuMark()
	err = v.waitInvocations(ctx, float64(messages+sends))
	res.CoresRuntime, res.CoresFunction = d.cores(cpu)
	stop()
	if err != nil {
		return res.fail(err)
	}
	el := time.Since(start)
	res.Seconds = el.Seconds()
	res.MsgsPerSec = float64(messages) / el.Seconds()
	res.InvocationsPerSec = float64(messages+sends) / el.Seconds()
	d.progress("%s/%s: %d addresses: %.0f msgs/s", scenario, mode.Name, addresses, res.MsgsPerSec)
	return d.finish(ctx, v, res, counts)
}

// finish waits for a checkpoint after the work, measures memory and
// checkpoints, and checks the state, the egress and the dead letters.
func (d *driver) finish(ctx context.Context, v *env, res Result, counts []int32) Result {
	// Two checkpoints: the second lets the shards drop the first's
	// overlays, so that what remains is what idle addresses cost.
	for range 2 {
		if err := v.waitCheckpoint(ctx); err != nil {
			return res.fail(fmt.Errorf("checkpoint after the work: %w", err))
		}
	}
	res.PeakRSS, res.HeapPeak, res.HeapIdle = v.memory(fmt.Sprintf("%s-%s-%d", res.Scenario, res.Mode, res.Addresses))
	res.Checkpoints = v.checkpointStats()
	verified, err := v.verify(ctx, counts)
	if err != nil {
		return res.fail(fmt.Errorf("state check: %w", err))
	}
	res.Verified = verified
	n, err := v.egressStored(ctx, res.Egress)
	if err != nil {
		return res.fail(err)
	}
	if n != res.Egress {
		return res.fail(fmt.Errorf("egress stream holds %d records, want %d", n, res.Egress))
	}
	m, err := v.metrics(ctx)
	if err != nil {
		return res.fail(err)
	}
	if calls := m["twinflow_call_addresses_count"]; calls > 0 {
		res.Calls = int(calls)
		res.MessagesPerCall = m["twinflow_invocations_total"] / calls
	}
	if writes := m["twinflow_frontdoor_write_messages_count"]; writes > 0 {
		res.MessagesPerWrite = m["twinflow_frontdoor_write_messages_sum"] / writes
		res.WriteMillis = 1000 * m["twinflow_frontdoor_write_seconds_sum"] / writes
	}
	dead := m["twinflow_dead_letters_total"]
	if dead > 0 {
		return res.fail(fmt.Errorf("%.0f dead letters", dead))
	}
	return res
}

// endToEnd measures publishers and engine together: messages per second
// from the first publish until every published message is applied.
func (d *driver) endToEnd(ctx context.Context, mode Mode) (res Result) {
	res = Result{Scenario: "e2e", Mode: mode.Name, Addresses: d.o.Addresses}
	plan := d.plan(d.o.Addresses, 0)
	dir, err := os.MkdirTemp("", "twinflow-bench")
	if err != nil {
		return res.fail(err)
	}
	defer os.RemoveAll(dir)
	v, err := d.startEngine(ctx, dir, mode)
	if err != nil {
		return res.fail(err)
	}
	defer v.close()
	d.progress("e2e/%s: publishing for %s", mode.Name, d.o.Duration)
	stop := d.profile("e2e-" + mode.Name)
	defer stop()
	start, cpu := time.Now(), d.cpuMark()
	n, err := v.pub.publishFor(ctx, plan, 0, d.o.Duration, 0, d.o.PayloadSize, false)
	if err == nil {
		err = v.pub.complete(ctx)
	}
	if err != nil {
		return res.fail(err)
	}
	acked := time.Since(start)
	counts, sends, egress := plan.Expected(n)
	res.Messages, res.Sends, res.Egress = n, sends, egress
	if err := v.waitInvocations(ctx, float64(n+sends)); err != nil {
		return res.fail(err)
	}
	el := time.Since(start)
	res.CoresRuntime, res.CoresFunction = d.cores(cpu)
	stop()
	res.Seconds = el.Seconds()
	res.PublishPerSec = float64(n) / acked.Seconds()
	res.MsgsPerSec = float64(n) / el.Seconds()
	res.InvocationsPerSec = float64(n+sends) / el.Seconds()
	d.progress("e2e/%s: published %.0f msgs/s, end to end %.0f msgs/s", mode.Name, res.PublishPerSec, res.MsgsPerSec)
	return d.finish(ctx, v, res, counts)
}

// latency offers a fixed load and measures publish → invocation (at the
// function) and publish → egress (at a subscriber), after a warm-up.
func (d *driver) latency(ctx context.Context, mode Mode, scenario string, addresses int, rate float64) (res Result) {
	res = Result{Scenario: scenario, Mode: mode.Name, Addresses: addresses, OfferedPerSec: rate}
	plan := d.plan(addresses, 0)
	dir, err := os.MkdirTemp("", "twinflow-bench")
	if err != nil {
		return res.fail(err)
	}
	defer os.RemoveAll(dir)
	v, err := d.startEngine(ctx, dir, mode)
	if err != nil {
		return res.fail(err)
	}
	defer v.close()
	var egressHist workload.Histogram
	var from atomic.Int64 // records published before are not measured
	from.Store(1<<63 - 1)
	sub, err := v.pub.nc.Subscribe(workload.EgressSubject, func(m *nats.Msg) {
		now := time.Now()
		if w, err := workload.Parse(m.Data); err == nil && w.Published >= from.Load() {
			egressHist.Record(now.Sub(time.Unix(0, w.Published)))
		}
	})
	if err != nil {
		return res.fail(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	d.progress("%s/%s: offering %.0f msgs/s over %d addresses", scenario, mode.Name, rate, addresses)
	const warmup = 2 * time.Second
	n1, err := v.pub.publishFor(ctx, plan, 0, warmup, rate, d.o.PayloadSize, true)
	if err != nil {
		return res.fail(err)
	}
	if err := d.fn.reset(); err != nil {
		return res.fail(err)
	}
	from.Store(time.Now().UnixNano())
	cpu := d.cpuMark()
	stop := d.profile(scenario + "-" + mode.Name)
	n2, err := v.pub.publishFor(ctx, plan, n1, d.o.LatencyDuration, rate, d.o.PayloadSize, true)
	res.CoresRuntime, res.CoresFunction = d.cores(cpu)
	stop()
	if err == nil {
		err = v.pub.complete(ctx)
	}
	if err != nil {
		return res.fail(err)
	}
	res.AchievedPerSec = float64(n2) / d.o.LatencyDuration.Seconds()
	counts, sends, egress := plan.Expected(n1 + n2)
	res.Messages, res.Sends, res.Egress = n1+n2, sends, egress
	if err := v.waitInvocations(ctx, float64(n1+n2+sends)); err != nil {
		return res.fail(err)
	}
	st, err := d.fn.stats()
	if err != nil {
		return res.fail(err)
	}
	res.Invoke = latencyOf(st.Latency)
	res = d.finish(ctx, v, res, counts)
	// The subscriber sees the records as the egress stream stores them.
	time.Sleep(200 * time.Millisecond)
	_ = sub.Unsubscribe()
	res.EgressLatency = latencyOf(egressHist.Snapshot())
	d.progress("%s/%s: invocation p99 %.1fms, egress p99 %.1fms", scenario, mode.Name, res.Invoke.P99, res.EgressLatency.P99)
	return res
}

func latencyOf(s workload.Snapshot) *Latency {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return &Latency{
		Count: s.Count(),
		P50:   ms(s.Quantile(0.5)), P99: ms(s.Quantile(0.99)), P999: ms(s.Quantile(0.999)), Max: ms(s.Quantile(1)),
	}
}
