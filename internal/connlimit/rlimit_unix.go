//go:build unix

package connlimit

import (
	"math"
	"syscall"
)

// openFileLimit returns the process's open-file limit (the soft
// RLIMIT_NOFILE), or 0 when it cannot be read.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if n := uint64(rl.Cur); n < math.MaxInt32 {
		return int(n)
	}
	return math.MaxInt32 // unlimited, or too many to matter (and int may be 32 bits)
}
