package datacenter_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/examples/datacenter"
)

// series builds a window of samples every step, starting at t0, with f
// setting the metrics of sample i.
func series(n int, step time.Duration, f func(i int, s *datacenter.Sample)) datacenter.Window {
	var w datacenter.Window
	for i := range n {
		s := datacenter.Sample{At: t0.Add(time.Duration(i) * step), CPU: 0.3, PacketDrop: 0.001, Volts: 12}
		f(i, &s)
		w = w.Add(s, 0)
	}
	return w
}

func TestHealthModel(t *testing.T) {
	m := datacenter.DefaultHealthModel()
	tests := []struct {
		name string
		w    datacenter.Window
		want []datacenter.Kind
	}{
		{"healthy", series(60, 5*time.Second, func(int, *datacenter.Sample) {}), nil},
		{"empty", nil, nil},
		{"cpu spike is not sustained", series(60, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i > 40 { // the last 95s
				s.CPU = 0.99
			}
		}), nil},
		{"cpu saturated for 2 minutes", series(60, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i >= 35 { // the last 120s
				s.CPU = 0.97
			}
		}), []datacenter.Kind{datacenter.HighCPU}},
		{"cpu saturated since the first report, but for less than 2 minutes", series(20, 5*time.Second, func(i int, s *datacenter.Sample) {
			s.CPU = 1
		}), nil},
		{"disk errors growing", series(30, 5*time.Second, func(i int, s *datacenter.Sample) {
			s.DiskErrors = 100 + uint64(i/5)
		}), []datacenter.Kind{datacenter.DiskFailing}},
		{"old disk errors only", series(60, 5*time.Second, func(i int, s *datacenter.Sample) {
			s.DiskErrors = 100
			if i < 20 { // more than 2 minutes ago
				s.DiskErrors = uint64(80 + i)
			}
		}), nil},
		{"disk counter reset by a reboot", series(30, 5*time.Second, func(i int, s *datacenter.Sample) {
			s.DiskErrors = 500
			if i >= 25 {
				s.DiskErrors = 1
			}
		}), nil},
		{"packet loss averaged", series(10, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i >= 8 {
				s.PacketDrop = 0.1
			}
		}), []datacenter.Kind{datacenter.PacketLoss}}, // (0.001+0.1+0.1)/3 > 5%
		{"one lossy sample is not enough", series(10, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i == 9 {
				s.PacketDrop = 0.12
			}
		}), nil}, // (0.001+0.001+0.12)/3 < 5%
		{"low voltage", series(10, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i >= 7 {
				s.Volts = 11
			}
		}), []datacenter.Kind{datacenter.PowerDegraded}},
		{"no power sensor", series(10, 5*time.Second, func(i int, s *datacenter.Sample) { s.Volts = 0 }), nil},
		{"several at once", series(30, 5*time.Second, func(i int, s *datacenter.Sample) {
			s.PacketDrop = 0.3
			s.Volts = 10.8
		}), []datacenter.Kind{datacenter.PacketLoss, datacenter.PowerDegraded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found := m.Assess(tt.w)
			if got := slices.Sorted(maps.Keys(found)); !slices.Equal(got, tt.want) {
				t.Fatalf("Assess = %v, want %v", found, tt.want)
			}
			for k, reason := range found {
				if reason == "" {
					t.Errorf("%s has no reason", k)
				}
			}
		})
	}
}

func TestHealthReasonsExplainTheVerdict(t *testing.T) {
	w := series(30, 5*time.Second, func(i int, s *datacenter.Sample) { s.DiskErrors = uint64(i) })
	got := datacenter.DefaultHealthModel().Assess(w)[datacenter.DiskFailing]
	if want := "disk errors rose from 5 to 29 in 2m0s"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	w = series(3, 5*time.Second, func(i int, s *datacenter.Sample) { s.PacketDrop = 0.25 })
	got = datacenter.DefaultHealthModel().Assess(w)[datacenter.PacketLoss]
	if !strings.Contains(got, "25.0%") || !strings.Contains(got, "last 3 reports") {
		t.Errorf("reason %q does not give the rate and the reports", got)
	}
}

// TestHealthHysteresis checks that an open incident resolves only past the
// healthier threshold, so a metric near the first one does not flap.
func TestHealthHysteresis(t *testing.T) {
	m := datacenter.DefaultHealthModel()
	flat := func(f func(*datacenter.Sample)) datacenter.Window {
		return series(30, 5*time.Second, func(_ int, s *datacenter.Sample) { f(s) })
	}
	tests := []struct {
		name     string
		w        datacenter.Window
		k        datacenter.Kind
		opens    bool // when it is not open yet
		stays    bool // when it is open
		reasonOK string
	}{
		{"drop rate between the thresholds", flat(func(s *datacenter.Sample) { s.PacketDrop = 0.03 }), datacenter.PacketLoss, false, true, "above 2.5%"},
		{"drop rate under the resolve threshold", flat(func(s *datacenter.Sample) { s.PacketDrop = 0.02 }), datacenter.PacketLoss, false, false, ""},
		{"voltage between the thresholds", flat(func(s *datacenter.Sample) { s.Volts = 11.5 }), datacenter.PowerDegraded, false, true, "below 11.60 V"},
		{"voltage back to normal", flat(func(s *datacenter.Sample) { s.Volts = 11.6 }), datacenter.PowerDegraded, false, false, ""},
		{"cpu between the thresholds", flat(func(s *datacenter.Sample) { s.CPU = 0.92 }), datacenter.HighCPU, false, true, "not below 90%"},
		{"cpu back to normal", flat(func(s *datacenter.Sample) { s.CPU = 0.85 }), datacenter.HighCPU, false, false, ""},
		{"one new disk error", series(30, 5*time.Second, func(i int, s *datacenter.Sample) {
			if i == 29 {
				s.DiskErrors = 1
			}
		}), datacenter.DiskFailing, false, true, "rose from 0 to 1"},
		{"no new disk errors", flat(func(s *datacenter.Sample) { s.DiskErrors = 9 }), datacenter.DiskFailing, false, false, ""},
		{"too few reports for a verdict", series(1, time.Second, func(_ int, s *datacenter.Sample) { s.PacketDrop = 0 }), datacenter.PacketLoss, false, true, "too few reports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, opened := m.Assess(tt.w)[tt.k]; opened != tt.opens {
				t.Errorf("closed %s: opens=%v, want %v", tt.k, opened, tt.opens)
			}
			reason, stayed := m.Assess(tt.w, tt.k)[tt.k]
			if stayed != tt.stays {
				t.Errorf("open %s: stays=%v, want %v", tt.k, stayed, tt.stays)
			}
			if stayed && !strings.Contains(reason, tt.reasonOK) {
				t.Errorf("reason %q does not say %q", reason, tt.reasonOK)
			}
		})
	}
}
