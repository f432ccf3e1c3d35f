package spec

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// deadLetters reads the deadLetters section.
func (d *decoder) deadLetters(m *Module, n *yaml.Node) {
	if n == nil {
		return
	}
	f := d.fields(n, "deadLetters", "maxAge", "maxBytes")
	if f == nil {
		return
	}
	if v := f["maxAge"]; v != nil {
		if t, ok := d.duration(v, "deadLetters.maxAge"); ok {
			m.DeadLetters.MaxAge = t
		}
	}
	if v := f["maxBytes"]; v != nil {
		r := resolve(v)
		size, err := parseSize(r.Value)
		switch {
		case r.Kind != yaml.ScalarNode:
			d.errorf(d.line(v), "deadLetters.maxBytes", "must be a size like 1GiB or 512MiB, not %s", kindOf(r))
		case err != nil:
			d.errorf(d.line(v), "deadLetters.maxBytes", "%v", err)
		case size < MinDeadLetterMaxBytes:
			d.errorf(d.line(v), "deadLetters.maxBytes", "must be at least 2MiB, to hold a dead letter of the largest message, got %s", r.Value)
		default:
			m.DeadLetters.MaxBytes = size
		}
	}
}

// sizeUnits are the units of a size, longest suffix first.
var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// parseSize reads a size in bytes: a whole number, or a number followed by
// B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (of 1000).
func parseSize(s string) (int64, error) {
	bad := fmt.Errorf("must be a size like 1GiB, 512MiB or a number of bytes, got %q", s)
	num, mult := s, 1.0
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v*mult, 0) || v*mult >= math.MaxInt64 {
		return 0, bad
	}
	return int64(v * mult), nil
}
