package datacenter_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
	"github.com/twinflow/twinflow/examples/datacenter/sim"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

// twins runs the twins in a harness with a simulated clock, as the runtime
// would: messages the twins send each other are delivered breadth first,
// and delayed messages when the clock reaches them, a new one replacing
// the pending one of the same sender and token.
type twins struct {
	t       *testing.T
	h       *sdktest.Harness
	now     time.Duration
	delayed []timer
	// alerts are the alerts published so far, described.
	alerts []string
}

type timer struct {
	due      time.Duration
	from, to sdk.Address
	msg      sdk.TypedValue
	token    string
}

// deliver delivers msg and everything it causes now.
func (w *twins) deliver(to sdk.Address, msg sdk.TypedValue, caller *sdk.Address) {
	w.t.Helper()
	type delivery struct {
		to     sdk.Address
		msg    sdk.TypedValue
		caller *sdk.Address
	}
	queue := []delivery{{to, msg, caller}}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		var opts []sdktest.InvokeOption
		if d.caller != nil {
			opts = append(opts, sdktest.WithCaller(*d.caller))
		}
		res, err := w.h.Invoke(d.to, d.msg, opts...)
		if err != nil {
			w.t.Fatalf("at %v, invoke %s with %s: %v", w.now, d.to, d.msg.Typename, err)
		}
		w.alerts = append(w.alerts, alerts(w.t, res)...)
		for _, m := range res.Sent {
			queue = append(queue, delivery{m.To, m.Value, &d.to})
		}
		for _, tok := range res.Cancelled {
			w.delayed = slices.DeleteFunc(w.delayed, func(x timer) bool { return x.from == d.to && x.token == tok })
		}
		for _, m := range res.Delayed {
			if m.CancellationToken != "" {
				w.delayed = slices.DeleteFunc(w.delayed, func(x timer) bool { return x.from == d.to && x.token == m.CancellationToken })
			}
			w.delayed = append(w.delayed, timer{w.now + m.Delay, d.to, m.To, m.Value, m.CancellationToken})
		}
	}
}

// advance moves the clock to now, firing the timers due on the way in
// order.
func (w *twins) advance(now time.Duration) {
	w.t.Helper()
	for {
		slices.SortStableFunc(w.delayed, func(a, b timer) int { return int(a.due - b.due) })
		if len(w.delayed) == 0 || w.delayed[0].due > now {
			break
		}
		tm := w.delayed[0]
		w.delayed = w.delayed[1:]
		w.now = tm.due
		w.deliver(tm.to, tm.msg, &tm.from)
	}
	w.now = now
}

// TestSimulatedSwitchFailure runs a simulated data center through the
// twins: a failing switch is reported as one rack incident, listed by the
// data center, and cleared when the switch recovers; a failing disk and a
// dead server in another rack are that servers' own incidents.
func TestSimulatedSwitchFailure(t *testing.T) {
	dc, err := sim.New(sim.Config{Racks: 2, ServersPerRack: 8, Seed: 7}, []sim.Fault{
		{Kind: sim.TOR, Target: "rack-1", At: 30 * time.Second},
		{Kind: sim.Disk, Target: "srv-0-2", At: 30 * time.Second},
		{Kind: sim.Clear, Target: "rack-1", At: 90 * time.Second},
		{Kind: sim.Dead, Target: "srv-0-5", At: 40 * time.Second},
		{Kind: sim.Clear, Target: "srv-0-5", At: 100 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := &twins{t: t, h: newHarness(t, datacenter.Config{})}
	unhealthyAt := map[time.Duration][]string{}
	for s := 0; s <= 150; s++ {
		elapsed := time.Duration(s) * time.Second
		w.advance(elapsed)
		dc.Advance(elapsed)
		for _, r := range dc.Reports(t0.Add(elapsed)) {
			w.deliver(serverAddr(r.GetServerId()), encode(t, datacenter.ServerMetricReportType, r), nil)
		}
		if s%30 == 29 {
			unhealthyAt[elapsed] = rackIDs(ask(t, w.h))
		}
	}
	log := w.alerts
	count := func(prefix string) int {
		n := 0
		for _, l := range log {
			if strings.HasPrefix(l, prefix) {
				n++
			}
		}
		return n
	}
	if n := count("server OPEN     rack-1/"); n != 8 {
		t.Errorf("%d servers of rack-1 alerted, want all 8:\n%s", n, strings.Join(log, "\n"))
	}
	if n := count("server OPEN     rack-0/srv-0-2 DISK_FAILING"); n != 1 {
		t.Errorf("failing disk alerted %d times, want once:\n%s", n, strings.Join(log, "\n"))
	}
	if n := count("server OPEN     rack-0/srv-0-5 NO_REPORTS: no report for 30s"); n != 1 {
		t.Errorf("dead server alerted %d times, want once:\n%s", n, strings.Join(log, "\n"))
	}
	if n := count("server RESOLVED rack-0/srv-0-5 NO_REPORTS"); n != 1 {
		t.Errorf("dead server came back %d times, want once:\n%s", n, strings.Join(log, "\n"))
	}
	if n := count("server OPEN     rack-0/"); n != 2 {
		t.Errorf("%d alerts in rack-0, want the disk and the dead server:\n%s", n, strings.Join(log, "\n"))
	}
	if n := count("rack   ALERT    rack-1 TOR_SWITCH_FAILURE"); n == 0 {
		t.Errorf("no switch failure reported:\n%s", strings.Join(log, "\n"))
	}
	if n := count("rack   ALERT    rack-0"); n != 0 {
		t.Errorf("rack-0 alerted for two unrelated incidents:\n%s", strings.Join(log, "\n"))
	}
	if n := count("rack   OK       rack-1"); n != 1 {
		t.Errorf("rack-1 recovered %d times, want once:\n%s", n, strings.Join(log, "\n"))
	}
	want := map[time.Duration][]string{29 * time.Second: nil, 59 * time.Second: {"rack-1"}, 89 * time.Second: {"rack-1"}, 119 * time.Second: nil, 149 * time.Second: nil}
	for at, racks := range want {
		if got := unhealthyAt[at]; !slices.Equal(got, racks) {
			t.Errorf("unhealthy racks at %v: %v, want %v", at, got, racks)
		}
	}
}
