package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// healthCmd checks a server's /health (or /readyz) and exits 0 when it
// answers 200, 1 otherwise with one line saying why. It is what a
// container's HEALTHCHECK runs: distroless and scratch images have no
// curl, and the check must not need a shell.
func healthCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay health", flag.ContinueOnError)
	r := remoteFlags(fs, healthEnv(getenv))
	readyz := fs.Bool("readyz", false, "check /readyz (the engine is reachable: the node can take traffic) instead of /health (the process serves)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	insecureTLS := fs.Bool("insecure-skip-verify", false, "do not verify an https:// server's certificate (e.g. a certificate that does not name 127.0.0.1)")
	quiet := fs.Bool("q", false, "print nothing when the check passes")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay health [flags]\n\n"+
			"GETs the server's /health (or /readyz with -readyz) and exits 0 when it answers 200,\n"+
			"1 otherwise with a one-line reason. Meant for container and supervisor health checks:\n"+
			"it needs no shell or curl. Without -server and RELAY_SERVER it checks 127.0.0.1 on the\n"+
			"port of RELAY_ADDR (https, unverified, when RELAY_TLS_CERT is set), else http://127.0.0.1:8000.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay health: unexpected argument %q\nRun 'relay health -h' to see the flags.\n", fs.Arg(0))
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "relay health: -timeout must be positive\nRun 'relay health -h' to see the flags.")
		return exitUsage
	}
	base, err := url.Parse(strings.TrimSuffix(r.server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		fmt.Fprintf(stderr, "relay health: -server / RELAY_SERVER %q must be an http:// or https:// URL\n", r.server)
		return exitUsage
	}
	// The server derived from RELAY_ADDR is this host's own: its
	// certificate names the public host, not 127.0.0.1, and nothing
	// secret is sent, so do not verify it.
	explicit := getenv("RELAY_SERVER") != ""
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "server" })
	if !explicit && base.Scheme == "https" && getenv("RELAY_ADDR") != "" {
		*insecureTLS = true
	}
	path := "/health"
	if *readyz {
		path = "/readyz"
	}
	target := base.String() + path

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "relay health: %v\n", err)
		return exitUsage
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // a health check talks to the server itself, never through HTTP_PROXY
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: *insecureTLS},
		},
		// A redirect would mean something other than Relay answers.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %s: %s\n", target, healthReason(err, *timeout))
		return exitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		line := fmt.Sprintf("unhealthy: %s: %s", target, resp.Status)
		if msg := errorMessage(body); msg != "" {
			line += ": " + msg
		}
		fmt.Fprintln(stderr, line)
		return exitFailure
	}
	if !*quiet {
		fmt.Fprintf(stdout, "ok: %s: %s\n", target, resp.Status)
	}
	return exitOK
}

// healthEnv makes RELAY_ADDR the default server when RELAY_SERVER is not
// set, so that `relay health` in the environment `relay serve` runs in
// (a container, a systemd unit) checks that server on whatever port it
// was given.
func healthEnv(getenv func(string) string) func(string) string {
	return func(key string) string {
		v := getenv(key)
		if key != "RELAY_SERVER" || v != "" {
			return v
		}
		addr := getenv("RELAY_ADDR")
		if addr == "" {
			return ""
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "" || port == "0" {
			return ""
		}
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		scheme := "http"
		if getenv("RELAY_TLS_CERT") != "" {
			scheme = "https"
		}
		return scheme + "://" + net.JoinHostPort(host, port)
	}
}

// healthReason is a short reason for a failed request.
func healthReason(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer within %v (-timeout)", timeout)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Sprintf("cannot connect: %v (is relay serving there? set -server / RELAY_SERVER)", oe.Err)
	}
	return oneLine(err.Error())
}

// errorMessage is the "error" of Relay's JSON error body, or the start of
// any other body, on one line.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return oneLine(e.Error)
	}
	s := []rune(oneLine(string(body)))
	if len(s) > 200 {
		return string(s[:200]) + "…"
	}
	return string(s)
}

func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, unicode.IsSpace), " ")
}
