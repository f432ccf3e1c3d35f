package sim

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newDC(t *testing.T, faults ...string) *DataCenter {
	t.Helper()
	fs, err := ParseFaults(faults)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Racks: 3, ServersPerRack: 4, Seed: 42}, fs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// step advances d to second s and returns the reports by server id.
func step(d *DataCenter, s int) map[string]*datacenterv1.ServerMetricReport {
	at := time.Duration(s) * time.Second
	d.Advance(at)
	out := make(map[string]*datacenterv1.ServerMetricReport)
	for _, r := range d.Reports(start.Add(at)) {
		out[r.GetServerId()] = r
	}
	return out
}

func TestHealthyServers(t *testing.T) {
	d := newDC(t)
	if got := len(d.Servers()); got != 12 {
		t.Fatalf("%d servers, want 12", got)
	}
	for s := range 60 {
		reports := step(d, s)
		if len(reports) != 12 {
			t.Fatalf("second %d: %d reports, want 12", s, len(reports))
		}
		for id, r := range reports {
			switch {
			case r.GetPacketDropRate() > 0.01, r.GetPowerSupplyVolts() < 11.8, r.GetCpuUtilization() > 0.7,
				r.GetDiskErrors() != 0, !r.GetReportedAt().AsTime().Equal(start.Add(time.Duration(s) * time.Second)):
				t.Fatalf("second %d: %s is not healthy: %v", s, id, r)
			}
		}
	}
}

func TestSwitchFaultMakesTheWholeRackDropPackets(t *testing.T) {
	d := newDC(t, "tor:rack-1@10s", "clear:rack-1@20s")
	for s := range 30 {
		for id, r := range step(d, s) {
			inRack := r.GetRackId() == "rack-1"
			lossy := r.GetPacketDropRate() >= 0.15
			if want := inRack && s >= 10 && s < 20; lossy != want {
				t.Fatalf("second %d: %s drops %.3f, want lossy=%v", s, id, r.GetPacketDropRate(), want)
			}
			if !lossy && r.GetPacketDropRate() > 0.005 {
				t.Fatalf("second %d: %s drops %.3f without a fault", s, id, r.GetPacketDropRate())
			}
		}
	}
}

func TestPowerFaultLowersTheRacksVoltage(t *testing.T) {
	d := newDC(t, "power:rack-2@5s")
	for id, r := range step(d, 5) {
		if low := r.GetPowerSupplyVolts() < 11.4; low != (r.GetRackId() == "rack-2") {
			t.Errorf("%s at %.2f V", id, r.GetPowerSupplyVolts())
		}
	}
}

func TestDiskFaultGrowsTheErrorCounter(t *testing.T) {
	d := newDC(t, "disk:rack-0/srv-2@3s", "clear:srv-0-2@8s")
	var errs []uint64
	for s := range 12 {
		errs = append(errs, step(d, s)["srv-0-2"].GetDiskErrors())
	}
	for s := 1; s < len(errs); s++ {
		grew := errs[s] > errs[s-1]
		if want := s >= 3 && s < 8; grew != want {
			t.Fatalf("disk errors %v: at second %d grew=%v, want %v", errs, s, grew, want)
		}
		if grew && errs[s]-errs[s-1] > 3 {
			t.Fatalf("disk errors %v: more than 3 new errors in one report", errs)
		}
	}
	// The counter is cumulative: clearing the fault does not reset it.
	if errs[11] == 0 || errs[11] != errs[8] {
		t.Fatalf("disk errors %v", errs)
	}
}

func TestDeadServerStopsReporting(t *testing.T) {
	d := newDC(t, "dead:srv-1-3@2s", "cpu:srv-1-3@3s", "clear:srv-1-3@5s")
	for s := range 7 {
		r, ok := step(d, s)["srv-1-3"]
		if want := s < 2 || s >= 5; ok != want {
			t.Fatalf("second %d: reported=%v, want %v", s, ok, want)
		}
		if ok && r.GetCpuUtilization() > 0.9 {
			t.Fatalf("second %d: cpu %.2f after the clear", s, r.GetCpuUtilization())
		}
	}
	if got := d.Faults("srv-1-3"); len(got) != 0 {
		t.Fatalf("faults %v after the clear", got)
	}
}

func TestFaultsAtTheSameTimeApplyInOrder(t *testing.T) {
	d := newDC(t, "tor:all@5s", "clear:rack-0@5s", "cpu:srv-2-0@1s")
	if got := d.Advance(0); len(got) != 0 {
		t.Fatalf("applied %v at 0", got)
	}
	got := d.Advance(10 * time.Second)
	var names []string
	for _, f := range got {
		names = append(names, f.String())
	}
	if want := []string{"cpu:srv-2-0@1s", "tor:all@5s", "clear:rack-0@5s"}; !slices.Equal(names, want) {
		t.Fatalf("applied %v, want %v", names, want)
	}
	if f := d.Faults("srv-0-0"); len(f) != 0 {
		t.Errorf("srv-0-0 faults %v, want none: the clear came after the switch failure", f)
	}
	if f := d.Faults("srv-2-0"); !slices.Equal(f, []FaultKind{CPU, TOR}) {
		t.Errorf("srv-2-0 faults %v", f)
	}
	if len(d.Pending()) != 0 {
		t.Errorf("pending %v", d.Pending())
	}
}

func TestSameSeedSameReports(t *testing.T) {
	a, b := newDC(t, "tor:rack-0@1s"), newDC(t, "tor:rack-0@1s")
	for s := range 5 {
		ra, rb := a.Reports(start), b.Reports(start)
		a.Advance(time.Duration(s) * time.Second)
		b.Advance(time.Duration(s) * time.Second)
		for i := range ra {
			if !proto.Equal(ra[i], rb[i]) {
				t.Fatalf("second %d: reports differ: %v, %v", s, ra[i], rb[i])
			}
		}
	}
}

func TestNewRejectsUnknownTargets(t *testing.T) {
	for _, f := range []Fault{{Kind: TOR, Target: "rack-7"}, {Kind: Disk, Target: "srv-0-9"}} {
		if _, err := New(Config{Racks: 3, ServersPerRack: 4}, []Fault{f}); err == nil {
			t.Errorf("New accepted %v", f)
		}
	}
	if _, err := New(Config{Racks: 0, ServersPerRack: 4}, nil); err == nil {
		t.Error("New accepted a data center without racks")
	}
}
