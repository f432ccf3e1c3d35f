package datacenter

import (
	"slices"
	"time"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
)

// WindowLength is how much history a server twin keeps: reports older than
// this, relative to the newest report, leave the window. The window's state
// also expires this long after its last write, so the window of a server
// that stopped reporting disappears by itself.
const WindowLength = 15 * time.Minute

// Sample is one report as kept in a server's window. It is JSON in state,
// with the units in the field names, so that `twinflow state get` reads
// well.
type Sample struct {
	At          time.Time `json:"at"`
	CPU         float64   `json:"cpu"`
	Memory      float64   `json:"memory"`
	DiskUsed    float64   `json:"diskUsed"`
	DiskErrors  uint64    `json:"diskErrors"`
	RxMbps      float64   `json:"rxMbps"`
	TxMbps      float64   `json:"txMbps"`
	PacketDrop  float64   `json:"packetDrop"`
	Volts       float64   `json:"volts"`
	Watts       float64   `json:"watts"`
	Temperature float64   `json:"temperatureCelsius"`
}

// SampleOf returns the sample of a report.
func SampleOf(r *datacenterv1.ServerMetricReport) Sample {
	return Sample{
		At:          r.GetReportedAt().AsTime(),
		CPU:         r.GetCpuUtilization(),
		Memory:      r.GetMemoryUtilization(),
		DiskUsed:    r.GetDiskUsed(),
		DiskErrors:  r.GetDiskErrors(),
		RxMbps:      r.GetNetworkRxMbps(),
		TxMbps:      r.GetNetworkTxMbps(),
		PacketDrop:  r.GetPacketDropRate(),
		Volts:       r.GetPowerSupplyVolts(),
		Watts:       r.GetPowerWatts(),
		Temperature: r.GetTemperatureCelsius(),
	}
}

// Window is the sliding window of a server's recent reports, oldest first.
type Window []Sample

// Newest returns the newest sample, and false when the window is empty.
func (w Window) Newest() (Sample, bool) {
	if len(w) == 0 {
		return Sample{}, false
	}
	return w[len(w)-1], true
}

// Add returns the window with s added and the samples older than
// WindowLength before the newest one dropped. It may modify w.
//
// A sample with the time of one already kept replaces it, so that a
// redelivered report does not count twice. A sample older than the newest
// is inserted in order: reports of one server normally arrive in order,
// but a daemon that resends a backlog should not scramble the window.
//
// With spacing > 0 the newest sample is provisional while it is less than
// spacing after the one before it: the next report replaces it rather than
// being appended. The kept samples are then at least spacing apart, and
// the newest report is always in the window.
func (w Window) Add(s Sample, spacing time.Duration) Window {
	i, found := slices.BinarySearchFunc(w, s.At, func(x Sample, t time.Time) int { return x.At.Compare(t) })
	switch {
	case found:
		w[i] = s
	case i < len(w):
		w = slices.Insert(w, i, s)
	case spacing > 0 && len(w) >= 2 && w[len(w)-1].At.Sub(w[len(w)-2].At) < spacing:
		w[len(w)-1] = s
	default:
		w = append(w, s)
	}
	newest := w[len(w)-1].At
	cutoff := newest.Add(-WindowLength)
	keep := 0
	for keep < len(w) && w[keep].At.Before(cutoff) {
		keep++
	}
	return slices.Delete(w, 0, keep)
}
