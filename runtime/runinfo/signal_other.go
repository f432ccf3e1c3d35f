//go:build !unix

package runinfo

import "os"

// running cannot probe a process here: it assumes it runs.
func running(*os.Process) bool { return true }
