package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// buildInfo describes the binary: the module version (set by `go install
// module@version`, "(devel)" for a build from a checkout) and the VCS
// revision the go command stamps into builds from a checkout.
type buildInfo struct {
	Version, Revision, Time, Go string
	Modified                    bool
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: "(devel)", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// version is the one-word version logged at start.
func version() string {
	b := readBuildInfo()
	if b.Revision == "" {
		return b.Version
	}
	rev := b.Revision[:min(12, len(b.Revision))]
	if b.Modified {
		rev += "+dirty"
	}
	return b.Version + "@" + rev
}

func versionCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay version", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay version\n\nPrints the module version, the VCS revision and time the binary was built from, and the Go version.\n")
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	b := readBuildInfo()
	fmt.Fprintf(stdout, "relay %s\n", b.Version)
	if b.Revision != "" {
		mod := ""
		if b.Modified {
			mod = " (with uncommitted changes)"
		}
		fmt.Fprintf(stdout, "revision %s%s\nbuilt from a commit of %s\n", b.Revision, mod, b.Time)
	} else {
		fmt.Fprintln(stdout, "revision unknown (built without VCS information)")
	}
	fmt.Fprintf(stdout, "%s %s/%s\n", b.Go, runtime.GOOS, runtime.GOARCH)
	return exitOK
}
