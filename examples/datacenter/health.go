package datacenter

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// HealthModel holds the thresholds of the server health model. Each rule
// looks at the window as of its newest sample, so that a verdict can be
// checked by hand against the reports. An incident opens at one threshold
// and resolves only past a second, healthier one: a metric hovering around
// a single threshold would otherwise open and resolve the incident with
// every report.
//
//   - HIGH_CPU opens when CPU utilization has been at least HighCPU in
//     every sample for at least HighCPUFor (a spike is normal; a saturated
//     server is not), and resolves when a sample is below HighCPUResolve.
//   - DISK_FAILING opens when the disk error counter grew by at least
//     DiskErrorIncrease within DiskErrorWindow (disks that start throwing
//     errors keep throwing them), and resolves when it did not grow at all
//     within DiskErrorWindow.
//   - PACKET_LOSS opens when the mean packet drop rate of the last
//     PacketLossSamples samples is above PacketLossRate (averaging keeps
//     one bad sample from raising it), and resolves when the mean is at or
//     below PacketLossResolveRate.
//   - POWER_DEGRADED opens when the mean supply voltage of the last
//     PowerSamples samples is below LowVolts (the 12 V rail's tolerance is
//     ±5%), and resolves when the mean is at or above LowVoltsResolve.
//
// The averaging rules give no verdict on a window with fewer samples than
// they average: they neither open nor resolve an incident. NO_REPORTS is not part of the model: the silence timer
// raises it and the next report resolves it.
type HealthModel struct {
	// HighCPU is the CPU utilization (0–1) that counts as saturated.
	// Default 0.95.
	HighCPU float64
	// HighCPUFor is how long the CPU must stay saturated. Default 2m.
	HighCPUFor time.Duration
	// HighCPUResolve is the CPU utilization below which a saturated server
	// is fine again. Default 0.9.
	HighCPUResolve float64
	// DiskErrorIncrease is how many new disk errors make a disk failing.
	// Default 3.
	DiskErrorIncrease uint64
	// DiskErrorWindow is the time in which the new errors are counted; the
	// incident resolves this long after the last new error. Default 2m.
	DiskErrorWindow time.Duration
	// PacketLossRate is the mean drop rate (0–1) above which the server
	// loses packets. Default 0.05.
	PacketLossRate float64
	// PacketLossResolveRate is the mean drop rate at or below which a
	// server no longer loses packets. Default 0.025.
	PacketLossResolveRate float64
	// PacketLossSamples is how many of the newest samples are averaged.
	// Default 3.
	PacketLossSamples int
	// LowVolts is the mean supply voltage below which the power is
	// degraded. Default 11.4.
	LowVolts float64
	// LowVoltsResolve is the mean supply voltage at or above which the
	// power is fine again. Default 11.6.
	LowVoltsResolve float64
	// PowerSamples is how many of the newest samples are averaged.
	// Default 3.
	PowerSamples int
}

// DefaultHealthModel returns the default thresholds.
func DefaultHealthModel() HealthModel {
	return HealthModel{
		HighCPU:               0.95,
		HighCPUFor:            2 * time.Minute,
		HighCPUResolve:        0.9,
		DiskErrorIncrease:     3,
		DiskErrorWindow:       2 * time.Minute,
		PacketLossRate:        0.05,
		PacketLossResolveRate: 0.025,
		PacketLossSamples:     3,
		LowVolts:              11.4,
		LowVoltsResolve:       11.6,
		PowerSamples:          3,
	}
}

func (m HealthModel) withDefaults() HealthModel {
	d := DefaultHealthModel()
	set := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	set(&m.HighCPU, d.HighCPU)
	set(&m.HighCPUResolve, d.HighCPUResolve)
	set(&m.PacketLossRate, d.PacketLossRate)
	set(&m.PacketLossResolveRate, d.PacketLossResolveRate)
	set(&m.LowVolts, d.LowVolts)
	set(&m.LowVoltsResolve, d.LowVoltsResolve)
	if m.HighCPUFor == 0 {
		m.HighCPUFor = d.HighCPUFor
	}
	if m.DiskErrorIncrease == 0 {
		m.DiskErrorIncrease = d.DiskErrorIncrease
	}
	if m.DiskErrorWindow == 0 {
		m.DiskErrorWindow = d.DiskErrorWindow
	}
	if m.PacketLossSamples == 0 {
		m.PacketLossSamples = d.PacketLossSamples
	}
	if m.PowerSamples == 0 {
		m.PowerSamples = d.PowerSamples
	}
	return m
}

func (m HealthModel) validate() error {
	switch {
	case m.HighCPU <= 0 || m.HighCPU > 1:
		return fmt.Errorf("HighCPU %v: want a utilization in (0, 1]", m.HighCPU)
	case m.HighCPUResolve <= 0 || m.HighCPUResolve > m.HighCPU:
		return fmt.Errorf("HighCPUResolve %v: want a utilization in (0, HighCPU]", m.HighCPUResolve)
	case m.PacketLossRate <= 0 || m.PacketLossRate >= 1:
		return fmt.Errorf("PacketLossRate %v: want a rate in (0, 1)", m.PacketLossRate)
	case m.PacketLossResolveRate <= 0 || m.PacketLossResolveRate > m.PacketLossRate:
		return fmt.Errorf("PacketLossResolveRate %v: want a rate in (0, PacketLossRate]", m.PacketLossResolveRate)
	case m.HighCPUFor <= 0 || m.HighCPUFor > WindowLength:
		return fmt.Errorf("HighCPUFor %v: want a duration in (0, %v]", m.HighCPUFor, WindowLength)
	case m.DiskErrorWindow <= 0 || m.DiskErrorWindow > WindowLength:
		return fmt.Errorf("DiskErrorWindow %v: want a duration in (0, %v]", m.DiskErrorWindow, WindowLength)
	case m.PacketLossSamples < 0 || m.PowerSamples < 0:
		return errors.New("PacketLossSamples and PowerSamples must be positive")
	case m.LowVolts <= 0:
		return fmt.Errorf("LowVolts %v: want a positive voltage", m.LowVolts)
	case m.LowVoltsResolve < m.LowVolts:
		return fmt.Errorf("LowVoltsResolve %v: want at least LowVolts %v", m.LowVoltsResolve, m.LowVolts)
	}
	return nil
}

// Assess evaluates the model on the window as of its newest sample, given
// the incidents already open, and returns the incidents open after it,
// each with the reason in words. An empty window changes nothing. The
// zero fields of m select the defaults.
func (m HealthModel) Assess(w Window, open ...Kind) map[Kind]string {
	m = m.withDefaults()
	found := make(map[Kind]string)
	newest, ok := w.Newest()
	if !ok {
		for _, k := range open {
			found[k] = tooFew
		}
		return found
	}
	isOpen := func(k Kind) bool { return slices.Contains(open, k) }

	if isOpen(HighCPU) && newest.CPU >= m.HighCPUResolve {
		found[HighCPU] = fmt.Sprintf("cpu still at %.0f%%, not below %.0f%%", 100*newest.CPU, 100*m.HighCPUResolve)
	} else if since, ok := m.saturatedSince(w); ok {
		found[HighCPU] = fmt.Sprintf("cpu at or above %.0f%% in every report for %v (now %.0f%%)",
			100*m.HighCPU, newest.At.Sub(since).Round(time.Second), 100*newest.CPU)
	}

	if base, ok := m.diskBaseline(w); ok {
		rise := newest.DiskErrors - base.DiskErrors
		if rise >= m.DiskErrorIncrease || isOpen(DiskFailing) && rise > 0 {
			found[DiskFailing] = fmt.Sprintf("disk errors rose from %d to %d in %v",
				base.DiskErrors, newest.DiskErrors, newest.At.Sub(base.At).Round(time.Second))
		}
	}

	if n, mean := meanOfNewest(w, m.PacketLossSamples, func(s Sample) float64 { return s.PacketDrop }); n < m.PacketLossSamples {
		if isOpen(PacketLoss) {
			found[PacketLoss] = tooFew
		}
	} else {
		limit := m.PacketLossRate
		if isOpen(PacketLoss) {
			limit = m.PacketLossResolveRate
		}
		if mean > limit {
			found[PacketLoss] = fmt.Sprintf("mean packet drop rate %.1f%% over the last %d reports, above %.3g%%",
				100*mean, n, 100*limit)
		}
	}

	// A report without a voltage (0) has no power sensor: no verdict.
	if n, mean := meanOfNewest(w, m.PowerSamples, func(s Sample) float64 { return s.Volts }); n < m.PowerSamples || newest.Volts == 0 {
		if isOpen(PowerDegraded) {
			found[PowerDegraded] = tooFew
		}
	} else {
		limit := m.LowVolts
		if isOpen(PowerDegraded) {
			limit = m.LowVoltsResolve
		}
		if mean < limit {
			found[PowerDegraded] = fmt.Sprintf("mean supply voltage %.2f V over the last %d reports, below %.2f V",
				mean, n, limit)
		}
	}
	return found
}

// tooFew is the reason an open incident stays open when the rule has too
// few samples for a verdict: only evidence resolves an incident.
const tooFew = "too few reports to tell"

// saturatedSince returns the time of the oldest sample of the saturated
// run that reaches back at least HighCPUFor from the newest sample.
func (m HealthModel) saturatedSince(w Window) (time.Time, bool) {
	newest := w[len(w)-1].At
	for i := len(w) - 1; i >= 0; i-- {
		if w[i].CPU < m.HighCPU {
			return time.Time{}, false
		}
		if newest.Sub(w[i].At) >= m.HighCPUFor {
			return w[i].At, true
		}
	}
	return time.Time{}, false
}

// diskBaseline returns the oldest sample within DiskErrorWindow of the
// newest, to compare the error counter against. A counter that went down
// (the server rebooted) restarts the comparison after the reset.
func (m HealthModel) diskBaseline(w Window) (Sample, bool) {
	newest := w[len(w)-1]
	base, ok := Sample{}, false
	for i := len(w) - 1; i >= 0; i-- {
		s := w[i]
		if newest.At.Sub(s.At) > m.DiskErrorWindow || s.DiskErrors > newest.DiskErrors {
			break
		}
		base, ok = s, true
	}
	return base, ok
}

// meanOfNewest returns how many of the newest n samples there are (n, or
// fewer in a short window), and the mean of f over them.
func meanOfNewest(w Window, n int, f func(Sample) float64) (int, float64) {
	if n > len(w) {
		n = len(w)
	}
	if n == 0 {
		return 0, 0
	}
	sum := 0.0
	for _, s := range w[len(w)-n:] {
		sum += f(s)
	}
	return n, sum / float64(n)
}
