package datacenter_test

import (
	"slices"
	"testing"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
)

func times(w datacenter.Window) []time.Duration {
	var out []time.Duration
	for _, s := range w {
		out = append(out, s.At.Sub(t0))
	}
	return out
}

func at(d time.Duration) datacenter.Sample { return datacenter.Sample{At: t0.Add(d)} }

func TestWindowDropsReportsOlderThan15Minutes(t *testing.T) {
	var w datacenter.Window
	for _, d := range []time.Duration{0, time.Minute, 10 * time.Minute, 15 * time.Minute} {
		w = w.Add(at(d), 0)
	}
	// 15 minutes after the first report it is still exactly in the window.
	if got, want := times(w), []time.Duration{0, time.Minute, 10 * time.Minute, 15 * time.Minute}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
	w = w.Add(at(15*time.Minute+time.Second), 0)
	if got, want := times(w), []time.Duration{time.Minute, 10 * time.Minute, 15 * time.Minute, 15*time.Minute + time.Second}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
	// Time is the reports' time: a report after a long gap empties the
	// window of everything before it.
	w = w.Add(at(time.Hour), 0)
	if got, want := times(w), []time.Duration{time.Hour}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
}

func TestWindowSpacingKeepsOneSamplePerSpacing(t *testing.T) {
	var w datacenter.Window
	for s := range 13 {
		w = w.Add(at(time.Duration(s)*time.Second), 5*time.Second)
	}
	// Kept samples are 5s apart; the newest report is always there.
	if got, want := times(w), []time.Duration{0, 5 * time.Second, 10 * time.Second, 12 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
	// A full window of 1-second reports stays bounded.
	for s := range 3600 {
		w = w.Add(at(time.Duration(s)*time.Second), 5*time.Second)
	}
	if n, limit := len(w), int(datacenter.WindowLength/(5*time.Second))+2; n > limit {
		t.Fatalf("window holds %d samples, want at most %d", n, limit)
	}
}

func TestWindowRedeliveredAndLateReports(t *testing.T) {
	var w datacenter.Window
	for _, d := range []time.Duration{0, 20 * time.Second, 40 * time.Second} {
		w = w.Add(at(d), 5*time.Second)
	}
	again := at(20 * time.Second)
	again.CPU = 0.9
	w = w.Add(again, 5*time.Second)
	w = w.Add(at(30*time.Second), 5*time.Second)
	if got, want := times(w), []time.Duration{0, 20 * time.Second, 30 * time.Second, 40 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
	if w[1].CPU != 0.9 {
		t.Errorf("a redelivered report did not replace the sample of its time")
	}
}
