package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is the release version, set when a release is built:
//
//	go build -ldflags "-X main.version=v1.2.0" ./cmd/twinflow
//
// Without it, the version is the one Go stamps into the binary: the
// module's version (a pseudo-version from the VCS when built in a
// checkout, "(devel)" otherwise) and the commit.
var version string

// versionString says which twinflow this is: version, commit and the Go
// that built it.
func versionString() string {
	v := version
	var commit, modified string
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = ", modified"
				}
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	s := "twinflow " + v
	if commit != "" {
		s += fmt.Sprintf(" (commit %.12s%s)", commit, modified)
	}
	return s + fmt.Sprintf(" %s %s/%s", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
