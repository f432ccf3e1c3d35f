package sim

import (
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	tests := []struct {
		in   string
		want Fault
	}{
		{"tor:rack-2@20s", Fault{TOR, "rack-2", 20 * time.Second}},
		{"disk:rack-1/srv-3@10s", Fault{Disk, "srv-1-3", 10 * time.Second}},
		{"dead:rack-0/srv-1@15s", Fault{Dead, "srv-0-1", 15 * time.Second}},
		{"power:rack-3@30s", Fault{Power, "rack-3", 30 * time.Second}},
		{"clear:rack-2@1m", Fault{Clear, "rack-2", time.Minute}},
		{"cpu:srv-4-12", Fault{CPU, "srv-4-12", 0}},
		{" clear:all@90s ", Fault{Clear, AllTarget, 90 * time.Second}},
	}
	for _, tt := range tests {
		got, err := ParseFault(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseFault(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if err == nil {
			again, err := ParseFault(got.String())
			if err != nil || again != got {
				t.Errorf("ParseFault(%q) = %v, %v; want it to read back as %v", got.String(), again, err, got)
			}
		}
	}
	for _, bad := range []string{"", "tor", "tor:", "flood:rack-1", "tor:rack-x", "disk:srv-1", "disk:rack-1/3", "tor:rack-1@soon", "tor:rack-1@-5s", "tor:host-1@1s"} {
		if f, err := ParseFault(bad); err == nil {
			t.Errorf("ParseFault(%q) = %v, want an error", bad, f)
		}
	}
}

func TestParseFaults(t *testing.T) {
	got, err := ParseFaults([]string{"tor:rack-2@10s,clear:rack-2@60s", "", "disk:rack-1/srv-3@15s,"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].Kind != Clear || got[2].Target != "srv-1-3" {
		t.Fatalf("ParseFaults = %v", got)
	}
	if _, err := ParseFaults([]string{"tor:rack-2@10s,oops"}); err == nil {
		t.Fatal("ParseFaults accepted a bad fault in a list")
	}
}
