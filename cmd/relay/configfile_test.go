package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relaytest"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigFilePrecedence: flags > environment > file > defaults, and
// -print-config says where each value came from.
func TestConfigFilePrecedence(t *testing.T) {
	file := writeFile(t, "relay.yaml", `
# a comment
ping-interval: 9s
max-topics: 11
max-body: 2MiB
allowed-origins:
  - https://a.example
  - https://b.example
log-level: warn
`)
	args := []string{"-config", file, "-ping-interval", "5s"}
	c, err := parseServe(args, env(map[string]string{"RELAY_MAX_TOPICS": "12"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.PingInterval != 5*time.Second || c.MaxTopics != 12 || c.MaxBody != 2<<20 || c.LogLevel != "warn" || c.SendQueue != 1<<20 {
		t.Fatalf("flag > env > file > default broken: ping %v topics %d body %d level %s queue %d", c.PingInterval, c.MaxTopics, c.MaxBody, c.LogLevel, c.SendQueue)
	}
	if got := c.serverConfig().API.AllowedOrigins; strings.Join(got, " ") != "https://a.example https://b.example" {
		t.Fatalf("a YAML list became %q", got)
	}
	// RELAY_CONFIG names the file as well, and -print-config shows sources.
	var out bytes.Buffer
	if code := run([]string{"-print-config", "-ping-interval", "5s"}, env(map[string]string{"RELAY_CONFIG": file, "RELAY_MAX_TOPICS": "12"}), &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, want := range []string{
		`(?m)^RELAY_PING_INTERVAL=5s +# -ping-interval$`,
		`(?m)^RELAY_MAX_TOPICS=12 +# RELAY_MAX_TOPICS$`,
		`(?m)^RELAY_MAX_BODY=2MiB +# ` + regexp.QuoteMeta(file) + `:5$`,
		`(?m)^RELAY_SEND_QUEUE=1MiB +# default$`,
		`(?m)^# config file: ` + regexp.QuoteMeta(file) + `$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("print-config lacks %s:\n%s", want, out.String())
		}
	}
}

// TestConfigFileErrors: every mistake in the file is reported, with its
// line, and unknown keys name the closest real one.
func TestConfigFileErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"max-bodi: 1MiB\n", `:1: unknown setting "max-bodi"; did you mean max-body?`},
		{"addr: 127.0.0.1:1\n\nzzzzzzzzzzzz: 1\n", `:3: unknown setting "zzzzzzzzzzzz"; keys are the flags`},
		{"ping-interval: soon\n", `:1: ping-interval "soon": not a duration`},
		{"max-topics: 3\nmax-topics: 4\n", ":2: max-topics is already set on line 1"},
		{"history:\n  a: b\n", ":2: history: want a value or a list of values, not a mapping"},
		{"- a\n- b\n", ":1: want a mapping of settings"},
		{"addr: [unclosed\n", "relay.yaml"},
		{"max-body: 1TB0\n", ":1: max-body \"1TB0\": not a size"},
	}
	for _, tt := range tests {
		file := writeFile(t, "relay.yaml", tt.text)
		_, err := parseServe([]string{"-config", file}, env(nil), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want it to contain %q", tt.text, err, tt.want)
		}
	}
	// Several mistakes: all of them, not only the first.
	file := writeFile(t, "relay.yaml", "max-bodi: 1\nping-interval: soon\n")
	_, err := parseServe([]string{"-config", file}, env(nil), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), ":1:") || !strings.Contains(err.Error(), ":2:") {
		t.Errorf("two mistakes gave %v", err)
	}
	_, err = parseServe([]string{"-config", "/nonexistent/relay.yaml"}, env(nil), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "-config / RELAY_CONFIG") {
		t.Errorf("missing file gave %v", err)
	}
}

func TestUnknownEnvironmentWarns(t *testing.T) {
	defer func(f func() []string) { environ = f }(environ)
	environ = func() []string {
		return []string{"RELAY_MAX_BODYY=1", "RELAY_ADDR=127.0.0.1:0", "RELAY_SERVER=x", "RELAY_REQUIRE_BROWSER=1", "RELAY_WHATEVER_IS_THIS_VARIABLE=1", "HOME=/root"}
	}
	c, err := parseServe(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.Warnings, "\n")
	if len(c.Warnings) != 2 || !strings.Contains(got, "RELAY_MAX_BODYY is set but is not a Relay setting; did you mean RELAY_MAX_BODY?") ||
		!strings.Contains(got, "RELAY_WHATEVER_IS_THIS_VARIABLE is set but is not a Relay setting; relay serve -h lists") {
		t.Fatalf("warnings:\n%s", got)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{
		"65536": 65536, "64KiB": 64 << 10, "64kib": 64 << 10, "1GB": 1e9, "1gb": 1e9, "1.5MiB": 3 << 19,
		"1.5 MiB": 3 << 19, "2k": 2000, "1MB": 1e6, "10b": 10, "0": 0,
	} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.2.3KB", "1.KB", "-1", "1e3", "1XB", "0.1B", "2TiB", "1.5"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q accepted as %d", in, b)
		}
	}
}

func TestConfigMistakesCaughtAtStart(t *testing.T) {
	cert, key, _ := relaytest.SelfSigned(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert", "/nonexistent.pem", "-tls-key", key}, "-tls-cert / RELAY_TLS_CERT and -tls-key / RELAY_TLS_KEY: open /nonexistent.pem"},
		{[]string{"-tls-cert", cert, "-tls-key", cert}, "-tls-cert / RELAY_TLS_CERT and -tls-key / RELAY_TLS_KEY:"},
		{[]string{"-allowed-origins", "example.com"}, `-allowed-origins / RELAY_ALLOWED_ORIGINS: "example.com" is not an origin: write it as browsers send it, with its scheme, e.g. https://example.com`},
		{[]string{"-allowed-origins", "https://ok.example,https://x.example/"}, `"https://x.example/": an origin is scheme://host[:port] with no path`},
		{[]string{"-allowed-origins", "https://Ex.com"}, "lower case"},
		{[]string{"-allowed-origins", "https://*.ex.com"}, "wildcards are not supported"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, env(nil), &out, &out); code != exitUsage || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%q: exit %d: %s\nwant %q", tt.args, code, out.String(), tt.want)
		}
	}
	// The good pair and good origins pass.
	if _, err := parseServe([]string{"-tls-cert", cert, "-tls-key", key, "-allowed-origins", "https://a.example, http://localhost:3000"}, env(nil), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
}

// TestBadFlagIsOneLine: a mistake on the command line says what and where
// to look, without the 5 KB usage.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{{"-bogus"}, {"serve", "-max-topics", "x"}, {"checkconfig", "-nope"}, {"token", "-nope"}, {"version", "-x"}} {
		var out, errb bytes.Buffer
		code := run(args, env(nil), &out, &errb)
		if code != exitUsage || strings.Count(errb.String(), "\n") != 2 || !strings.Contains(errb.String(), "-h' to see") || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-h"}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "checkconfig") || !strings.Contains(out.String(), "genconfig") {
		t.Errorf("relay -h: exit %d: %s", code, out.String())
	}
}

// TestGenconfigRoundTrip: the generated file is valid, holds fresh
// secrets (different on each run), serves with keys required, and is not
// overwritten by accident.
func TestGenconfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "relay.yaml")
	var out, errb bytes.Buffer
	if code := run([]string{"genconfig", file}, env(nil), &out, &errb); code != 0 {
		t.Fatalf("genconfig: exit %d: %s", code, errb.String())
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", st.Mode(), err)
	}
	if code := run([]string{"genconfig", file}, env(nil), &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "-force") {
		t.Fatalf("overwrote without -force: exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"checkconfig", file}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "valid") || !strings.Contains(out.String(), "API keys required: true; connect tokens: true") {
		t.Fatalf("checkconfig: exit %d: %s %s", code, out.String(), errb.String())
	}
	c, err := parseServe([]string{"-config", file}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIKeys) < 40 || len(c.TokenSecret) < 60 {
		t.Fatalf("secrets too short: %d, %d", len(c.APIKeys), len(c.TokenSecret))
	}
	out.Reset()
	run([]string{"genconfig"}, env(nil), &out, &errb)
	if strings.Contains(out.String(), c.APIKeys) {
		t.Fatal("two genconfig runs made the same API key")
	}
	// Every setting is in the template, documented.
	for _, o := range options(&serveConfig{}) {
		if !regexp.MustCompile(`(?m)^(# )?` + o.flag + `: `).MatchString(out.String()) {
			t.Errorf("the template lacks %s", o.flag)
		}
	}
	// A mistake found by checkconfig: exit 2, the line named.
	bad := writeFile(t, "bad.yaml", "addr: 127.0.0.1:1\nmax-topic: 3\n")
	errb.Reset()
	if code := run([]string{"checkconfig", bad}, env(nil), &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "bad.yaml:2: unknown setting \"max-topic\"; did you mean max-topics?") {
		t.Fatalf("checkconfig of a bad file: exit %d: %s", code, errb.String())
	}
	// The exposure rule: open API off loopback is refused by checkconfig too.
	open := writeFile(t, "open.yaml", "addr: 0.0.0.0:8000\n")
	errb.Reset()
	if code := run([]string{"checkconfig", open}, env(nil), &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "refusing to serve the open API") {
		t.Fatalf("checkconfig of an open API off loopback: exit %d: %s", code, errb.String())
	}
}

func TestChecktoken(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	var out, errb bytes.Buffer
	run([]string{"token", "-sub", "42", "-topics", "chat.*"}, env(map[string]string{"RELAY_TOKEN_SECRET": secret}), &out, &errb)
	tok := strings.TrimSpace(out.String())
	tests := []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"checktoken", tok}, map[string]string{"RELAY_TOKEN_SECRET": secret}, 0, "accepted: user 42, topics chat.*"},
		{[]string{"checktoken", tok, "-token-secret", strings.Repeat("x", 32)}, nil, 1, "refused: invalid token: its signature does not verify"},
		{[]string{"checktoken", tok, "-token-issuer", "auth.example"}, map[string]string{"RELAY_TOKEN_SECRET": secret}, 1, `refused: invalid token: it has no "iss", which is required here`},
		{[]string{"checktoken", tok}, nil, 1, "refused: this configuration accepts no connect tokens"},
		{[]string{"checktoken", "abc"}, map[string]string{"RELAY_TOKEN_SECRET": secret}, 1, "token: not a JWT"},
		{[]string{"checktoken"}, nil, exitUsage, ""},
	}
	for _, tt := range tests {
		out.Reset()
		errb.Reset()
		code := run(tt.args, env(tt.env), &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%q: exit %d (want %d): %s %s\nwant %q", tt.args[1:], code, tt.code, out.String(), errb.String(), tt.want)
		}
	}
	// Through a config file: the file's secret applies.
	file := writeFile(t, "relay.yaml", "token-secret: "+secret+"\n")
	out.Reset()
	if code := run([]string{"checktoken", "-config", file, tok}, env(nil), &out, &errb); code != 0 {
		t.Fatalf("checktoken with the file's secret: exit %d: %s", code, out.String())
	}
}

// TestEveryCommandHasHelp: relay -h lists every subcommand, and each
// answers -h with its usage on stdout and exit 0.
func TestEveryCommandHasHelp(t *testing.T) {
	var list bytes.Buffer
	run([]string{"-h"}, env(nil), &list, &list)
	for _, c := range commands() {
		if !regexp.MustCompile(`(?m)^  ` + c.name + ` `).MatchString(list.String()) {
			t.Errorf("relay -h does not list %s:\n%s", c.name, list.String())
		}
		var out, errb bytes.Buffer
		if code := run([]string{c.name, "-h"}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "Usage: relay") || errb.Len() != 0 {
			t.Errorf("relay %s -h: exit %d, stdout %q, stderr %q", c.name, code, out.String(), errb.String())
		}
	}
}
