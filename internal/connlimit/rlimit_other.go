//go:build !unix

package connlimit

// openFileLimit returns 0: there is no open-file limit to read here, so
// MaxOpen has no default cap.
func openFileLimit() int { return 0 }
