// Package sim simulates the servers of a data center for the datacenter
// example: it generates the metric reports a fleet of healthy servers
// would publish, and lets faults be injected on a schedule so that the
// twins have something to find.
//
// The simulation is pure: no clock, no I/O, and randomness from a seed.
// The caller advances it with the time elapsed since the start and asks
// for the reports at a given time, so tests step it without sleeping and
// get the same numbers on every run.
package sim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
)

// Config describes the simulated data center.
type Config struct {
	// Racks is the number of racks, rack-0 to rack-<Racks-1>.
	Racks int
	// ServersPerRack is the number of servers in each rack; server s of
	// rack r is srv-<r>-<s>.
	ServersPerRack int
	// Seed makes the generated metrics reproducible.
	Seed uint64
}

// Validate reports a data center that cannot be simulated.
func (c Config) Validate() error {
	if c.Racks < 1 || c.ServersPerRack < 1 {
		return fmt.Errorf("want at least one rack and one server per rack, got %d racks of %d servers", c.Racks, c.ServersPerRack)
	}
	if c.Racks*c.ServersPerRack > 1_000_000 {
		return errors.New("more than a million servers")
	}
	return nil
}

// RackID returns the id of rack r.
func RackID(r int) string { return fmt.Sprintf("rack-%d", r) }

// ServerID returns the id of server s of rack r. Server ids are unique in
// the data center because each names a twin.
func ServerID(r, s int) string { return fmt.Sprintf("srv-%d-%d", r, s) }

// Server is one simulated server.
type Server struct {
	ID   string
	Rack string
}

// machine is the simulated state of one server.
type machine struct {
	Server
	// Baselines of a healthy server, fixed at start so that servers differ.
	cpu, memory, diskUsed, rx, tx, watts, temperature float64
	diskErrors                                        uint64
	faults                                            map[FaultKind]bool
}

// DataCenter is a simulated data center. It is not safe for concurrent
// use.
type DataCenter struct {
	machines []*machine
	byID     map[string]*machine
	byRack   map[string][]*machine
	rng      *rand.Rand
	// schedule holds the faults not applied yet, in time order.
	schedule []Fault
}

// New returns a data center of healthy servers with the faults scheduled.
// It fails when a fault names a rack or server that does not exist.
func New(cfg Config, faults []Fault) (*DataCenter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &DataCenter{
		byID:   make(map[string]*machine),
		byRack: make(map[string][]*machine),
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x6461746163656e74)), // "datacent"
	}
	for r := range cfg.Racks {
		for s := range cfg.ServersPerRack {
			m := &machine{
				Server:      Server{ID: ServerID(r, s), Rack: RackID(r)},
				cpu:         0.2 + 0.4*d.rng.Float64(),
				memory:      0.4 + 0.3*d.rng.Float64(),
				diskUsed:    0.3 + 0.5*d.rng.Float64(),
				rx:          100 + 800*d.rng.Float64(),
				tx:          100 + 800*d.rng.Float64(),
				watts:       150 + 200*d.rng.Float64(),
				temperature: 20 + 5*d.rng.Float64(),
				faults:      make(map[FaultKind]bool),
			}
			d.machines = append(d.machines, m)
			d.byID[m.ID] = m
			d.byRack[m.Rack] = append(d.byRack[m.Rack], m)
		}
	}
	for _, f := range faults {
		if _, err := d.targets(f); err != nil {
			return nil, fmt.Errorf("fault %s: %w", f, err)
		}
	}
	d.schedule = slices.Clone(faults)
	// Stable, so that faults at the same time apply in the order given:
	// "clear:rack-1@10s,tor:rack-1@10s" ends with the switch failing.
	slices.SortStableFunc(d.schedule, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
	return d, nil
}

// Servers returns the servers, rack by rack.
func (d *DataCenter) Servers() []Server {
	out := make([]Server, len(d.machines))
	for i, m := range d.machines {
		out[i] = m.Server
	}
	return out
}

// targets returns the servers a fault applies to.
func (d *DataCenter) targets(f Fault) ([]*machine, error) {
	if f.Target == AllTarget {
		return d.machines, nil
	}
	if ms, ok := d.byRack[f.Target]; ok {
		return ms, nil
	}
	if m, ok := d.byID[f.Target]; ok {
		return []*machine{m}, nil
	}
	return nil, fmt.Errorf("no rack or server %q in this data center", f.Target)
}

// Advance applies, in order, the scheduled faults due at elapsed (the time
// since the simulation started) and returns them.
func (d *DataCenter) Advance(elapsed time.Duration) []Fault {
	n := 0
	for n < len(d.schedule) && d.schedule[n].At <= elapsed {
		n++
	}
	due := d.schedule[:n:n]
	d.schedule = d.schedule[n:]
	for _, f := range due {
		ms, _ := d.targets(f) // checked by New
		for _, m := range ms {
			if f.Kind == Clear {
				clear(m.faults)
			} else {
				m.faults[f.Kind] = true
			}
		}
	}
	return due
}

// Pending returns the faults not applied yet, in time order.
func (d *DataCenter) Pending() []Fault { return slices.Clone(d.schedule) }

// Faults returns the active faults of a server, sorted.
func (d *DataCenter) Faults(server string) []FaultKind {
	m, ok := d.byID[server]
	if !ok {
		return nil
	}
	var out []FaultKind
	for k, on := range m.faults {
		if on {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Reports returns the report of every server that is not dead, taken at
// now, in the order of [DataCenter.Servers]. Each call is one reporting
// round: cumulative counters such as disk errors advance with it.
func (d *DataCenter) Reports(now time.Time) []*datacenterv1.ServerMetricReport {
	out := make([]*datacenterv1.ServerMetricReport, 0, len(d.machines))
	for _, m := range d.machines {
		if r := d.report(m, now); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// report draws one report of m, or returns nil when m is dead. The random
// numbers are drawn in the same order whatever the faults, so that a
// fault changes only the metrics it is about.
func (d *DataCenter) report(m *machine, now time.Time) *datacenterv1.ServerMetricReport {
	noise := func(scale float64) float64 { return scale * (2*d.rng.Float64() - 1) }
	r := &datacenterv1.ServerMetricReport{
		ServerId:           m.ID,
		RackId:             m.Rack,
		ReportedAt:         timestamppb.New(now),
		CpuUtilization:     clamp01(m.cpu + noise(0.05)),
		MemoryUtilization:  clamp01(m.memory + noise(0.02)),
		DiskUsed:           m.diskUsed,
		NetworkRxMbps:      m.rx + noise(50),
		NetworkTxMbps:      m.tx + noise(50),
		PacketDropRate:     0.005 * d.rng.Float64(),
		PowerSupplyVolts:   12 + noise(0.1),
		PowerWatts:         m.watts + noise(10),
		TemperatureCelsius: m.temperature + noise(0.5),
	}
	faultDraw := d.rng.Float64()
	newErrors := uint64(1 + d.rng.IntN(3))
	if m.faults[Dead] {
		return nil
	}
	if m.faults[CPU] {
		r.CpuUtilization = 0.96 + 0.04*faultDraw
		r.PowerWatts *= 1.3
	}
	if m.faults[Disk] {
		m.diskErrors += newErrors
	}
	r.DiskErrors = m.diskErrors
	if m.faults[TOR] {
		// A failing switch drops a large, fluctuating share of packets and
		// the throughput collapses with it.
		r.PacketDropRate = 0.15 + 0.2*faultDraw
		r.NetworkRxMbps *= 0.3
		r.NetworkTxMbps *= 0.3
	}
	if m.faults[Power] {
		r.PowerSupplyVolts = 10.9 + 0.3*faultDraw
		r.PowerWatts *= 0.85
	}
	// Round to what a metrics daemon reports, which also keeps the twins'
	// state readable.
	r.CpuUtilization = round(r.CpuUtilization, 3)
	r.MemoryUtilization = round(r.MemoryUtilization, 3)
	r.DiskUsed = round(r.DiskUsed, 3)
	r.PacketDropRate = round(r.PacketDropRate, 4)
	r.NetworkRxMbps = round(r.NetworkRxMbps, 1)
	r.NetworkTxMbps = round(r.NetworkTxMbps, 1)
	r.PowerSupplyVolts = round(r.PowerSupplyVolts, 2)
	r.PowerWatts = round(r.PowerWatts, 1)
	r.TemperatureCelsius = round(r.TemperatureCelsius, 1)
	return r
}

func clamp01(x float64) float64 { return min(max(x, 0), 1) }

// round rounds x to the given number of decimals.
func round(x float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(x*p) / p
}
