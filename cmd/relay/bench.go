package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/loadgen"
)

// benchCmd load-tests a deployment: `relay bench -scenario fanout
// -connections 1000 -rate 100`. The engine is internal/loadgen; this
// reads the flags and prints.
func benchCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay bench", flag.ContinueOnError)
	r := remoteFlags(fs, getenv)
	scenario := fs.String("scenario", loadgen.Fanout, "connections (idle sockets: connect rate, server memory per connection), fanout (every subscriber on one topic) or topics (subscribers and publishes spread over -topics)")
	conns := fs.Int("connections", loadgen.DefaultConnections, "sockets (subscribers) to open")
	topics := fs.Int("topics", loadgen.DefaultTopics, "topics of the topics scenario (subscriber i listens to topic i mod N)")
	rate := fs.Float64("rate", 100, "publishes per second over all topics; 0: as fast as the server answers, -inflight at a time")
	inflight := fs.Int("inflight", loadgen.DefaultInflight, "most publishes waiting for an answer")
	messages := fs.Int64("messages", 0, "stop after this many publishes; 0: when -duration is over")
	duration := fs.Duration("duration", loadgen.DefaultDuration, "how long to publish; the connections scenario holds its sockets idle this long")
	size := fs.Int("size", loadgen.DefaultSize, "message size in bytes (a \"seq:unixnano:\" prefix and padding)")
	warmup := fs.Duration("warmup", loadgen.DefaultWarmup, "longest wait for every subscriber to receive a probe, proving it is subscribed, before publishing")
	drain := fs.Duration("drain", loadgen.DefaultDrain, "longest wait for stragglers after the last publish; what has not arrived then is lost")
	dialConc := fs.Int("dial-concurrency", loadgen.DefaultDialConcurrency, "connection setups (register, upgrade, subscribe) in flight")
	src := fs.String("src", "auto", "local addresses to connect from to a loopback server, round-robin: a range 127.0.0.2-127.0.0.250, a comma-separated list, none, or auto (that range for an IPv4 loopback server on Linux, so the server's per-address connect rate does not apply to the whole run)")
	timeout := fs.Duration("timeout", 5*time.Minute, "hard limit for the whole run")
	asJSON := fs.Bool("json", false, "print the result as one JSON object instead of the summary")
	failOnLoss := fs.Bool("fail-on-loss", false, "exit 1 when a delivery was lost")
	quiet := fs.Bool("q", false, "no progress line on stderr")
	fs.Usage = func() {
		limit := "unknown here"
		if n, hard := loadgen.MaxConnections(); n > 0 {
			limit = fmt.Sprintf("%d here, where the hard limit is %d", n, hard)
		}
		fmt.Fprintf(fs.Output(), `Usage: relay bench [-scenario fanout|topics|connections] [flags]

Load-tests a Relay deployment (or any server speaking the tutorial protocol)
from this machine: subscribers register, connect and subscribe over
WebSocket, publishes go over HTTP carrying their send time, and each
receive measures the latency from publish to receive. Prints a progress
line each second on stderr and a summary (or -json) at the end.

  relay bench -scenario connections -connections 10000
  relay bench -scenario fanout -connections 1000 -rate 0 -messages 5000
  relay bench -scenario fanout -connections 1000 -rate 100 -duration 10s
  relay bench -scenario topics -topics 1000 -connections 10000 -rate 0
  relay bench -server http://a:8000,http://b:8000 ...  (a cluster: subscribers and publishes round-robin)

One process can open at most as many sockets as its hard open-file limit
(RLIMIT_NOFILE) allows, less some for HTTP (%s); run several processes,
on several machines, for more. Publishes and registrations send
-api-key as Authorization: Bearer; /metrics is read before and after to
report the server's memory per connection when it is there.

Exit codes: 0 the run completed (losses are reported; -fail-on-loss makes
them fail), 1 the run failed (no connection, refused publishes, dropped
sockets, subscribers that never got a message), 2 bad flags.

`, limit)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "relay bench: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q: every setting is a flag (relay bench -h)", fs.Arg(0))
	}
	var servers []string
	for _, s := range strings.Split(r.server, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	if len(servers) == 0 {
		return usageErr("-server / RELAY_SERVER is empty")
	}
	sources, err := parseSources(*src)
	if err != nil {
		return usageErr("-src: %v", err)
	}
	if *timeout <= 0 {
		return usageErr("-timeout must be positive")
	}
	cfg := loadgen.Config{
		Scenario: *scenario, Servers: servers, APIKey: r.apiKey,
		Connections: *conns, Topics: *topics, Rate: *rate, Inflight: *inflight, Messages: *messages,
		Duration: *duration, Size: *size, Warmup: *warmup, Drain: *drain, DialConcurrency: *dialConc,
		Source: sources,
	}
	if cfg.Scenario == loadgen.Connections && *conns == 0 {
		return usageErr("-connections must be positive for the connections scenario")
	}
	if !*quiet {
		cfg.Progress = func(p loadgen.Progress) { fmt.Fprintln(stderr, p) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		res.Summary(stdout)
	}
	switch {
	case !res.OK:
		if *asJSON {
			fmt.Fprintf(stderr, "relay bench: the run failed: %s\n", strings.Join(res.Failures, "; "))
		}
		if res.Connect.Connected == 0 && res.Connect.Attempted > 0 {
			fmt.Fprintf(stderr, "Is the server running at %s? Set -server or RELAY_SERVER to its address.\n", r.server)
		}
		return exitFailure
	case *failOnLoss && res.Delivery != nil && res.Delivery.Lost > 0:
		fmt.Fprintf(stderr, "relay bench: %d deliveries lost (-fail-on-loss)\n", res.Delivery.Lost)
		return exitFailure
	}
	return exitOK
}

// parseSources reads -src.
func parseSources(s string) ([]netip.Addr, error) {
	switch s = strings.TrimSpace(s); s {
	case "none", "":
		return nil, nil
	case "auto":
		// Linux routes all of 127.0.0.0/8 to the loopback interface, so
		// sockets can be bound to any of its addresses; the dialer uses
		// them for IPv4 loopback servers only.
		if runtime.GOOS != "linux" {
			return nil, nil
		}
		return loadgen.LoopbackSources(), nil
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(strings.TrimSpace(from))
		b, err2 := netip.ParseAddr(strings.TrimSpace(to))
		if err1 != nil || err2 != nil || !a.Is4() || !b.Is4() || b.Less(a) {
			return nil, fmt.Errorf("%q: want an IPv4 range like 127.0.0.2-127.0.0.250", s)
		}
		var list []netip.Addr
		for x := a; x.Compare(b) <= 0 && len(list) < 1<<16; x = x.Next() {
			list = append(list, x)
		}
		return list, nil
	}
	var list []netip.Addr
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: want addresses, a range, none or auto", f)
		}
		list = append(list, a)
	}
	return list, nil
}
