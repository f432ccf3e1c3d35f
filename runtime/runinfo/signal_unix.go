//go:build unix

package runinfo

import (
	"errors"
	"os"
	"syscall"
)

// running reports whether process p exists: signal 0 checks without
// signalling, and EPERM means it exists under another user.
func running(p *os.Process) bool {
	err := p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}
