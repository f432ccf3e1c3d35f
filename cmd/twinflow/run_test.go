package main

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"512MiB", 512 << 20},
		{"2GiB", 2 << 30},
		{"1G", 1 << 30},
		{"1GB", 1 << 30},
		{"1.5g", 3 << 29},
		{"64k", 64 << 10},
		{"1048576", 1 << 20},
	} {
		if got, err := parseBytes(tt.in); err != nil || got != tt.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "0", "-1G", "lots", "12 parsecs", "1QiB"} {
		_, err := parseBytes(in)
		if err == nil || !strings.Contains(err.Error(), "is not a size; use a number of bytes or e.g. 512MiB or 2GiB") {
			t.Errorf("parseBytes(%q) = %v, want an error", in, err)
		}
	}
}
