//go:build !unix

package loadgen

import "errors"

func raiseFileLimit() (soft, hard uint64, err error) {
	return 0, 0, errors.New("no open-file limit on this system")
}

func cpuSeconds() float64 { return 0 }
