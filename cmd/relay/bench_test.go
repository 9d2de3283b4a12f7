package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func runBench(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = benchCmd(args, func(k string) string { return env[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBenchFanoutJSON(t *testing.T) {
	in := relaytest.Start(t, server.Config{Metrics: true})
	code, out, errs := runBench(t, nil, "-server", in.URL, "-connections", "50", "-messages", "200", "-rate", "0", "-json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var res struct {
		Scenario string `json:"scenario"`
		OK       bool   `json:"ok"`
		Connect  struct {
			Connected int `json:"connected"`
			Ready     int `json:"ready"`
		} `json:"connect"`
		Publish struct {
			Accepted        int64 `json:"accepted"`
			ServerDelivered int64 `json:"server_delivered"`
		} `json:"publish"`
		Delivery struct {
			Expected, Received, Lost, Duplicates int64
			PerSecond                            float64 `json:"per_second"`
			Latency                              struct {
				Count int64   `json:"count"`
				P50   float64 `json:"p50_ms"`
				P99   float64 `json:"p99_ms"`
				Max   float64 `json:"max_ms"`
			} `json:"latency"`
		} `json:"delivery"`
		Memory struct {
			PerConnection *float64 `json:"per_connection_bytes"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("-json printed %q: %v", out, err)
	}
	d := res.Delivery
	if !res.OK || res.Scenario != "fanout" || res.Connect.Connected != 50 || res.Connect.Ready != 50 || res.Publish.Accepted != 200 {
		t.Errorf("result %+v", res)
	}
	if d.Expected != 50*200 || d.Received != 50*200 || d.Lost != 0 || d.Duplicates != 0 || d.PerSecond <= 0 {
		t.Errorf("delivery %+v, want 10000 received and none lost", d)
	}
	if d.Latency.Count != 50*200 || d.Latency.P50 > d.Latency.P99 || d.Latency.P99 > d.Latency.Max {
		t.Errorf("latency %+v", d.Latency)
	}
	if res.Memory.PerConnection == nil || res.Publish.ServerDelivered != 50*200 {
		t.Errorf("memory %v, server delivered %d", res.Memory.PerConnection, res.Publish.ServerDelivered)
	}
}

func TestBenchSummaryAndAPIKey(t *testing.T) {
	key := "bench-test-key-0123456789"
	a, err := auth.New(auth.Config{APIKeys: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	in := relaytest.Start(t, server.Config{API: api.Config{Auth: a}})
	// Without the key every registration is refused: a failed run.
	code, out, _ := runBench(t, map[string]string{"RELAY_SERVER": in.URL}, "-scenario", "topics", "-connections", "20", "-topics", "5", "-messages", "50", "-q")
	if code != exitFailure || !strings.Contains(out, "status 401") || !strings.Contains(out, "FAILED") {
		t.Errorf("without the key: exit %d\n%s", code, out)
	}
	code, out, errs := runBench(t, map[string]string{"RELAY_SERVER": in.URL, "RELAY_API_KEY": key},
		"-scenario", "topics", "-connections", "20", "-topics", "5", "-messages", "50", "-rate", "500")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"relay bench topics", "20/20 connected", "50 accepted of 50", "200 of 200 expected", "lost 0, duplicates 0", "latency       p50", "memory per connection unknown", "  ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchConnectionsAndCluster(t *testing.T) {
	a := relaytest.Start(t, server.Config{Metrics: true})
	b := relaytest.Start(t, server.Config{Metrics: true})
	code, out, errs := runBench(t, nil, "-server", a.URL+", "+b.URL, "-scenario", "connections", "-connections", "40", "-duration", "100ms", "-json", "-q")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var res struct {
		Servers []string `json:"servers"`
		Connect struct {
			Connected int     `json:"connected"`
			PerSecond float64 `json:"per_second"`
		} `json:"connect"`
		Memory struct {
			Known bool `json:"known"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Servers) != 2 || res.Connect.Connected != 40 || res.Connect.PerSecond <= 0 || !res.Memory.Known {
		t.Errorf("result %+v", res)
	}
}

func TestBenchDeadServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out, errs := runBench(t, nil, "-server", "http://"+addr, "-connections", "3", "-messages", "3", "-warmup", "100ms", "-drain", "100ms", "-q")
	if code != exitFailure || !strings.Contains(out, "no connection succeeded") || !strings.Contains(out, "refused") || !strings.Contains(errs, "Is the server running") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "nope"},
		{"-connections", "100000"},
		{"-server", "ftp://x"},
		{"-src", "10.0.0.9-10.0.0.1"},
		{"extra"},
		{"-rate", "x"},
	} {
		code, out, errs := runBench(t, nil, args...)
		if code != exitUsage || out != "" || strings.Count(strings.TrimSpace(errs), "\n") > 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	_, _, errs := runBench(t, nil, "-connections", "100000")
	if !strings.Contains(errs, "hard limit of") || !strings.Contains(errs, "RLIMIT_NOFILE") {
		t.Errorf("the open-file limit is not named: %s", errs)
	}
	code, out, _ := runBench(t, nil, "-h")
	if code != exitOK || !strings.Contains(out, "open-file limit") || !strings.Contains(out, "-fail-on-loss") {
		t.Errorf("-h: exit %d\n%s", code, out)
	}
}

func TestParseSources(t *testing.T) {
	l, err := parseSources("127.0.0.2-127.0.0.4")
	if err != nil || len(l) != 3 || l[2].String() != "127.0.0.4" {
		t.Errorf("%v %v", l, err)
	}
	if l, err := parseSources("none"); err != nil || l != nil {
		t.Errorf("%v %v", l, err)
	}
	if l, err := parseSources("127.0.0.5, 127.0.0.6"); err != nil || len(l) != 2 {
		t.Errorf("%v %v", l, err)
	}
}
