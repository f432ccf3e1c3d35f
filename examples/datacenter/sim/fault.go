package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultKind is what goes wrong.
type FaultKind string

// The faults. Each applies to the servers its target names: one server, a
// rack (every server in it), or "all". The rack-level names say what they
// model when applied to a rack.
const (
	// TOR: the top-of-rack switch fails; its servers drop 15–35% of their
	// packets.
	TOR FaultKind = "tor"
	// Power: the rack's power distribution sags; supply voltage falls to
	// 10.9–11.2 V.
	Power FaultKind = "power"
	// Disk: a disk fails; its error counter climbs by 1–3 per report.
	Disk FaultKind = "disk"
	// Dead: the server stops reporting.
	Dead FaultKind = "dead"
	// CPU: the CPU saturates at 96–100%.
	CPU FaultKind = "cpu"
	// Clear ends every fault of the target's servers.
	Clear FaultKind = "clear"
)

// AllTarget is the target naming every server.
const AllTarget = "all"

var kinds = []FaultKind{TOR, Power, Disk, Dead, CPU, Clear}

// Fault is one scheduled fault: kind:target@at.
type Fault struct {
	Kind FaultKind
	// Target is a rack id, a server id, or AllTarget.
	Target string
	// At is the time since the start of the simulation.
	At time.Duration
}

// String returns the fault as ParseFault reads it.
func (f Fault) String() string { return fmt.Sprintf("%s:%s@%v", f.Kind, f.Target, f.At) }

// ParseFault reads "kind:target@at", e.g. "tor:rack-2@20s",
// "disk:srv-1-3@10s" or "clear:all@2m". A server may also be named by its
// rack and position, "rack-1/srv-3", which is srv-1-3. Without "@at" the
// fault applies from the start.
func ParseFault(s string) (Fault, error) {
	kind, rest, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Fault{}, fmt.Errorf("fault %q: want kind:target@time, e.g. tor:rack-2@20s", s)
	}
	f := Fault{Kind: FaultKind(kind)}
	if !isKind(f.Kind) {
		return Fault{}, fmt.Errorf("fault %q: unknown kind %q; want one of %v", s, kind, kinds)
	}
	target, at, hasAt := strings.Cut(rest, "@")
	if hasAt {
		d, err := time.ParseDuration(at)
		if err != nil || d < 0 {
			return Fault{}, fmt.Errorf("fault %q: time %q: want a duration since the start such as 20s", s, at)
		}
		f.At = d
	}
	t, err := parseTarget(target)
	if err != nil {
		return Fault{}, fmt.Errorf("fault %q: %w", s, err)
	}
	f.Target = t
	return f, nil
}

// ParseFaults reads faults from flag values, each holding one fault or
// several separated by commas. Empty values are skipped.
func ParseFaults(values []string) ([]Fault, error) {
	var out []Fault
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			f, err := ParseFault(part)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func isKind(k FaultKind) bool { return slices.Contains(kinds, k) }

// parseTarget accepts "all", "rack-R", "srv-R-S" and "rack-R/srv-S".
func parseTarget(t string) (string, error) {
	switch {
	case t == "":
		return "", fmt.Errorf("no target; want a rack (rack-2), a server (srv-1-3 or rack-1/srv-3) or %q", AllTarget)
	case t == AllTarget:
		return t, nil
	}
	rack, server, nested := strings.Cut(t, "/")
	if nested {
		r, ok := number(rack, "rack-")
		s, ok2 := number(server, "srv-")
		if !ok || !ok2 {
			return "", fmt.Errorf("target %q: want rack-R/srv-S", t)
		}
		return ServerID(r, s), nil
	}
	if r, ok := number(t, "rack-"); ok {
		return RackID(r), nil
	}
	if r, s, ok := strings.Cut(strings.TrimPrefix(t, "srv-"), "-"); ok && strings.HasPrefix(t, "srv-") {
		ri, err1 := strconv.Atoi(r)
		si, err2 := strconv.Atoi(s)
		if err1 == nil && err2 == nil && ri >= 0 && si >= 0 {
			return ServerID(ri, si), nil
		}
	}
	return "", fmt.Errorf("target %q: want a rack (rack-2), a server (srv-1-3 or rack-1/srv-3) or %q", t, AllTarget)
}

// number parses prefix followed by a non-negative decimal number.
func number(s, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}
