package main

import (
	"bytes"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func runHealth(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"health"}, args...), func(k string) string { return env[k] }, &o, &e)
	return code, o.String(), e.String()
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestHealthCmd(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		switch r.URL.Path {
		case "/health":
			w.WriteHeader(http.StatusOK)
		case "/readyz":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"engine unreachable:\ndial tcp 127.0.0.1:6379: connection refused"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	code, out, errOut := runHealth(t, nil, "-server", srv.URL)
	if code != exitOK || !strings.HasPrefix(out, "ok: "+srv.URL+"/health: 200") || errOut != "" {
		t.Fatalf("healthy server: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runHealth(t, map[string]string{"RELAY_SERVER": srv.URL + "/"}, "-q")
	if code != exitOK || out != "" {
		t.Fatalf("-q with RELAY_SERVER: code %d, stdout %q", code, out)
	}

	code, out, errOut = runHealth(t, nil, "-server", srv.URL, "-readyz")
	want := "unhealthy: " + srv.URL + "/readyz: 503 Service Unavailable: engine unreachable: dial tcp 127.0.0.1:6379: connection refused\n"
	if code != exitFailure || out != "" || errOut != want {
		t.Fatalf("-readyz on an unready server: code %d, stdout %q, stderr %q, want %q", code, out, errOut, want)
	}
	if got := strings.Join(paths, " "); got != "/health /health /readyz" {
		t.Fatalf("paths requested: %s", got)
	}

	// Nothing listening: exit 1 and one line saying so.
	addr := freeAddr(t)
	code, _, errOut = runHealth(t, nil, "-server", "http://"+addr)
	if code != exitFailure || !strings.Contains(errOut, "cannot connect") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("no server: code %d, stderr %q", code, errOut)
	}
}

func TestHealthCmdTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	code, _, errOut := runHealth(t, nil, "-server", srv.URL, "-timeout", "200ms")
	if code != exitFailure || !strings.Contains(errOut, "no answer within 200ms") {
		t.Fatalf("hung server: code %d, stderr %q", code, errOut)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v with -timeout 200ms", d)
	}
}

func TestHealthCmdUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-server", "ftp://x"},
		{"-server", "127.0.0.1:8000"},
		{"-timeout", "0s"},
		{"-nope"},
		{"extra"},
	} {
		if code, _, errOut := runHealth(t, nil, args...); code != exitUsage || errOut == "" {
			t.Errorf("relay health %v: code %d, stderr %q; want %d and a message", args, code, errOut, exitUsage)
		}
	}
	code, out, _ := runHealth(t, nil, "-h")
	if code != exitOK || !strings.Contains(out, "-readyz") || !strings.Contains(out, "RELAY_ADDR") {
		t.Fatalf("-h: code %d, %q", code, out)
	}
	var o bytes.Buffer
	run([]string{"-h"}, func(string) string { return "" }, &o, &o)
	if !strings.Contains(o.String(), "  health ") {
		t.Fatalf("relay -h does not list health:\n%s", o.String())
	}
}

// TestHealthEnv: without RELAY_SERVER, relay health checks the port
// RELAY_ADDR serves on, as it must inside the container the image runs.
func TestHealthEnv(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http://127.0.0.1:8000"},
		{map[string]string{"RELAY_ADDR": "0.0.0.0:9000"}, "http://127.0.0.1:9000"},
		{map[string]string{"RELAY_ADDR": ":9001"}, "http://127.0.0.1:9001"},
		{map[string]string{"RELAY_ADDR": "[::]:9002"}, "http://[::1]:9002"},
		{map[string]string{"RELAY_ADDR": "10.1.2.3:9003", "RELAY_TLS_CERT": "/c.pem"}, "https://10.1.2.3:9003"},
		{map[string]string{"RELAY_ADDR": "127.0.0.1:0"}, "http://127.0.0.1:8000"},
		{map[string]string{"RELAY_ADDR": "0.0.0.0:9000", "RELAY_SERVER": "http://relay:1"}, "http://relay:1"},
	} {
		env := c.env
		r := remoteFlags(flag.NewFlagSet("t", flag.ContinueOnError), healthEnv(func(k string) string { return env[k] }))
		if r.server != c.want {
			t.Errorf("env %v: server %q, want %q", c.env, r.server, c.want)
		}
	}
}

// TestHealthCmdTLS: the server derived from RELAY_ADDR with
// RELAY_TLS_CERT is checked over https without verifying its certificate
// (which names the public host, not 127.0.0.1); a -server given
// explicitly is verified.
func TestHealthCmdTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	env := map[string]string{"RELAY_ADDR": addr, "RELAY_TLS_CERT": "/etc/relay/cert.pem"}
	if code, out, errOut := runHealth(t, env); code != exitOK || !strings.HasPrefix(out, "ok: https://") {
		t.Fatalf("derived https: code %d, %q %q", code, out, errOut)
	}
	if code, _, errOut := runHealth(t, env, "-server", srv.URL); code != exitFailure || !strings.Contains(errOut, "certificate") {
		t.Fatalf("explicit -server with an unknown certificate: code %d, %q", code, errOut)
	}
	if code, _, errOut := runHealth(t, env, "-server", srv.URL, "-insecure-skip-verify"); code != exitOK {
		t.Fatalf("-insecure-skip-verify: code %d, %q", code, errOut)
	}
}
