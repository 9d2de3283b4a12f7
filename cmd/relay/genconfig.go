package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/redisbroker"
)

// genconfig writes a config file: every setting with its description and
// default (commented out, so that a later release's defaults still
// apply), and a fresh API key and token secret, which are the two things
// a new deployment must not leave at their defaults.
func genconfig(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay genconfig", flag.ContinueOnError)
	force := fs.Bool("force", false, "overwrite FILE if it exists")
	addr := fs.String("addr", "127.0.0.1:8000", "the listen address to write into the file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay genconfig [-force] [-addr host:port] [FILE]\n\n"+
			"Writes a commented config file with a fresh random API key and token secret\n"+
			"to FILE (mode 0600, since it holds secrets), or to stdout without FILE.\n"+
			"Then: relay checkconfig FILE; relay serve -config FILE.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "relay genconfig: one FILE at most, got %q\nRun 'relay genconfig -h' for usage.\n", fs.Args())
		return exitUsage
	}
	text := configTemplate(*addr, randomSecret(32), randomSecret(48))
	if fs.NArg() == 0 || fs.Arg(0) == "-" {
		fmt.Fprint(stdout, text)
		return exitOK
	}
	path := fs.Arg(0)
	mode := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		mode = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, mode, 0o600)
	if errors.Is(err, os.ErrExist) {
		fmt.Fprintf(stderr, "relay genconfig: %s exists; pass -force to overwrite it\n", path)
		return exitUsage
	}
	if err == nil {
		_, err = io.WriteString(f, text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "relay genconfig: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "wrote %s (an API key and a token secret are in it: keep it private)\ncheck it:  relay checkconfig %s\nserve it:  relay serve -config %s\n", path, path, path)
	return exitOK
}

// randomSecret returns n random bytes, base64url-encoded.
func randomSecret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// configTemplate renders the config file.
func configTemplate(addr, apiKey, tokenSecret string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Relay configuration, written by `relay genconfig` on %s.\n", time.Now().UTC().Format("2006-01-02"))
	b.WriteString("#\n# Keys are the flags of `relay serve -h` without the dash. RELAY_* environment\n" +
		"# variables override this file, and flags override both. Settings left\n" +
		"# commented out keep their defaults (shown). Sizes take KB/MB/GB (powers of\n" +
		"# 1000) or KiB/MiB/GiB (powers of 1024); durations look like 30s, 10m, 1h.\n" +
		"# Lists are comma-separated or YAML lists. Check: relay checkconfig FILE\n")
	set := map[string]string{"addr": addr, "api-keys": apiKey, "token-secret": tokenSecret}
	for _, o := range options(&serveConfig{}) {
		b.WriteString("\n")
		for _, l := range wrap(o.usage+" (env "+o.env+")", 76) {
			b.WriteString("# " + l + "\n")
		}
		if v, ok := set[o.flag]; ok {
			fmt.Fprintf(&b, "%s: %s\n", o.flag, yamlScalar(v))
			continue
		}
		fmt.Fprintf(&b, "# %s: %s\n", o.flag, yamlScalar(o.def))
	}
	return b.String()
}

var plainYAML = regexp.MustCompile(`^[A-Za-z0-9_./+-][A-Za-z0-9_./:@+=,-]*$`)

// yamlScalar writes v so that YAML reads it back as the same string.
func yamlScalar(v string) string {
	if plainYAML.MatchString(v) {
		return v
	}
	return strconv.Quote(v) // a JSON string is a YAML double-quoted scalar
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// checkconfig validates a config file as `relay serve -config FILE` would
// read it (with the environment and any flags given after FILE on top),
// including the files it names (TLS pair, key files), without serving.
func checkconfig(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		args = append([]string{"-config", args[0]}, args[1:]...)
	}
	if len(args) == 0 && getenv("RELAY_CONFIG") == "" {
		fmt.Fprintln(stderr, "relay checkconfig: name the config file: relay checkconfig FILE [flags]\nRun 'relay checkconfig -h' for usage.")
		return exitUsage
	}
	cfg, _, err := parseSettings("relay checkconfig", args, getenv, stdout, 0)
	if code, ok := settingsError(err, "relay checkconfig", stderr); !ok {
		return code
	}
	sec, err := cfg.security()
	if err == nil {
		var warning string
		if warning, err = cfg.exposure(sec); warning != "" {
			cfg.Warnings = append(cfg.Warnings, warning)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "relay: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	name := cfg.ConfigFile
	if name == "" {
		name = "the environment"
	}
	tls := "plain HTTP"
	if cfg.TLSCert != "" {
		tls = "TLS"
	}
	fmt.Fprintf(stdout, "%s: valid\n  listens on %s (%s), engine %s\n  API keys required: %v; connect tokens: %v; allowed origins: %s\n",
		name, cfg.Addr, tls, redisbroker.Redact(cfg.Broker), sec.KeysRequired(), sec.TokensEnabled(), cfg.AllowedOrigins)
	return exitOK
}
