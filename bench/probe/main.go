// Command probe reproduces the attacks of issue 9 ("Hardening: no client
// can grow the server's memory or starve the others") against a Relay
// server on loopback, so that the server's figures before and after each
// fix can be measured the same way (bench/probes.sh runs them all).
//
//	probe fresh     [-history]        subscribes to (or reads) topics nobody published to
//	probe slowloris [-same-src]       HTTP connections that never finish their headers
//	probe partial                     sockets holding a half-sent 128 KB message
//	probe subscribe                   huge relay.v1 subscribes next to pinging victims
//	probe history                     60 KB publishes to thousands of distinct topics
//	probe pingflood [-continuation]   control or empty frames as fast as possible
//	probe expiry                      100,000 registrations of one user expiring at once
//	probe pusherchurn                 Pusher sockets churning through new public channels
//	probe table FILE...               markdown table of the JSON lines
//
// Each probe prints a human summary on stderr and one JSON line on stdout
// (appended to -out as well). With -server-pid it samples the server's
// VmRSS from /proc: before, peak, and after the attack stopped and -settle
// passed, and checks that GET /health still answers. Every loop is bounded
// by -duration (or a count) and the whole run by -timeout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// probeDef is one subcommand. setup registers the probe's own flags and
// returns what runs it once they are parsed.
type probeDef struct {
	name, summary string
	duration      time.Duration // default -duration
	setup         func(fs *flag.FlagSet) runFunc
}

// runFunc runs the attack and returns its figures (a struct marshalled
// under "figures") and the few that go in the markdown table. It returns
// once every attacking connection is closed, so that what the server still
// holds afterwards is what it kept.
type runFunc func(ctx context.Context, p *prober) (figures any, headline []figure)

var probes = []probeDef{
	{"fresh", "relay.v1 subscribes (or GET /history) of topics nobody publishes to", 30 * time.Second, setupFresh},
	{"slowloris", "HTTP requests whose headers never end, while /health is checked", 30 * time.Second, setupSlowloris},
	{"partial", "sockets sending a 65,000-byte non-final frame, then a 65,536-byte continuation a byte at a time", 30 * time.Second, setupPartial},
	{"subscribe", "~58 KB relay.v1 subscribes 45 times a second beside 20 pinging victims", 20 * time.Second, setupSubscribe},
	{"history", "60 KB publishes to thousands of distinct topics", 60 * time.Second, setupHistory},
	{"pingflood", "ping (or empty continuation) frames as fast as possible beside 20 pinging victims", 15 * time.Second, setupPingflood},
	{"expiry", "100,000 registrations of one user, then register latency while they expire", 90 * time.Second, setupExpiry},
	{"pusherchurn", "Pusher sockets subscribing to and unsubscribing from a new public channel at every frame", 30 * time.Second, setupPusherChurn},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: probe <probe> [flags]   (probe <probe> -h lists its flags)\n       probe table FILE...       markdown table of result lines (one column per file)\n\nprobes:\n")
	for _, d := range probes {
		fmt.Fprintf(os.Stderr, "  %-10s %s (default -duration %s)\n", d.name, d.summary, d.duration)
	}
}

// config holds the flags every probe has.
type config struct {
	base      string
	apiKey    string
	serverPID int
	duration  time.Duration
	timeout   time.Duration
	settle    time.Duration
	out       string
	label     string
	run       string
	src       string
}

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		usage()
		os.Exit(2)
	}
	if os.Args[1] == "table" {
		os.Exit(table(os.Args[2:], os.Stdout))
	}
	i := slices.IndexFunc(probes, func(d probeDef) bool { return d.name == os.Args[1] })
	if i < 0 {
		usage()
		os.Exit(2)
	}
	def := probes[i]
	var c config
	fs := flag.NewFlagSet(def.name, flag.ExitOnError)
	fs.StringVar(&c.base, "http", "http://127.0.0.1:8000", "server base URL; loopback only")
	fs.StringVar(&c.apiKey, "api-key", "", "API key, sent as Authorization: Bearer on register, publish and history")
	fs.IntVar(&c.serverPID, "server-pid", 0, "server process id: VmRSS and CPU time are read from /proc")
	fs.DurationVar(&c.duration, "duration", def.duration, "length of the attack")
	fs.DurationVar(&c.timeout, "timeout", 4*time.Minute, "hard limit for the whole run")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait after the attack stopped before the last RSS reading")
	fs.StringVar(&c.out, "out", "", "append the JSON result line to this file")
	fs.StringVar(&c.label, "label", "", "free-form label copied into the result (bench/probes.sh: the run's name)")
	fs.StringVar(&c.run, "run", "", "what server was probed (bench/probes.sh: commit or binary); a column of the table")
	fs.StringVar(&c.src, "src", "127.0.0.2-127.0.0.250", "source address range of attacking connections (per-address limits see many clients); \"\": kernel default")
	run := def.setup(fs)
	fs.Parse(os.Args[2:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "probe %s: unexpected arguments %q\n", def.name, fs.Args())
		os.Exit(2)
	}
	p, err := newProber(def.name, c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probe %s: %v\n", def.name, err)
		os.Exit(2)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "api-key" {
			p.res.Params[f.Name] = f.Value.String()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The context bounds every loop; this bounds a loop that forgot to
	// look at it, or a read that hangs.
	time.AfterFunc(c.timeout+30*time.Second, func() {
		fmt.Fprintf(os.Stderr, "probe %s: still running %s after -timeout; giving up\n", def.name, 30*time.Second)
		os.Exit(3)
	})
	p.begin(ctx)
	figures, headline := run(ctx, p)
	p.end(ctx, figures, headline)
}

// prober is what every probe shares: the target, the clients, the server
// sampler and the result being built.
type prober struct {
	name  string
	cfg   config
	runID string       // makes topic names unique per run
	http  *http.Client // keep-alive client from 127.0.0.1
	src   *srcPool
	srv   *serverSampler
	res   result
	start time.Time
	// metricNames are read from GET /metrics once the attack is over and
	// -settle passed (what the server still holds).
	metricNames []string
}

// result is the JSON line a probe prints.
type result struct {
	Probe    string         `json:"probe"`
	Label    string         `json:"label,omitempty"`
	Run      string         `json:"run,omitempty"`
	Start    string         `json:"start"`
	Params   map[string]any `json:"params"`
	Server   *serverResult  `json:"server,omitempty"`
	Figures  any            `json:"figures"`
	Headline []figure       `json:"headline"`
	// HealthAfter says whether GET /health answered 200 within 2 s once
	// the attack was over and -settle passed.
	HealthAfter    bool   `json:"health_after"`
	HealthAfterErr string `json:"health_after_error,omitempty"`
	// MetricsAfter are the server's own counts after -settle.
	MetricsAfter map[string]float64 `json:"metrics_after,omitempty"`
	Aborted      string             `json:"aborted,omitempty"`
	TotalS       float64            `json:"total_s"`
}

// figure is one line of the markdown table: a name and its value as text.
type figure struct {
	Name  string `json:"figure"`
	Value string `json:"value"`
}

func newProber(name string, c config) (*prober, error) {
	c.base = strings.TrimRight(c.base, "/")
	if err := checkLoopback(c.base); err != nil {
		return nil, err
	}
	ips, err := parseSrcRange(c.src)
	if err != nil {
		return nil, err
	}
	p := &prober{
		name:  name,
		cfg:   c,
		runID: randHex(3),
		http:  newHTTPClient(64),
		src:   &srcPool{ips: ips},
		start: time.Now(),
	}
	p.res = result{Probe: name, Label: c.label, Run: c.run, Start: p.start.UTC().Format(time.RFC3339), Params: map[string]any{}}
	p.res.Params["nofile"] = raiseNofile()
	return p, nil
}

// begin reads the server's state before the attack and starts sampling.
func (p *prober) begin(ctx context.Context) {
	if p.cfg.serverPID > 0 {
		p.srv = startSampler(p.cfg.serverPID, 100*time.Millisecond)
	}
	if err := p.health(ctx); err != nil {
		p.logf("the server does not answer GET /health before the attack: %v", err)
		p.res.Aborted = "server not healthy before the attack"
	}
}

// end waits -settle, takes the last readings and prints the result.
func (p *prober) end(ctx context.Context, figures any, headline []figure) {
	p.res.Figures = figures
	p.http.CloseIdleConnections() // what the server still holds is then its own
	p.logf("attack over; settling %s", p.cfg.settle)
	sleep(context.WithoutCancel(ctx), p.cfg.settle)
	var sr *serverResult
	if p.srv != nil {
		r := p.srv.stop()
		r.SettleS = p.cfg.settle.Seconds()
		sr, p.res.Server = &r, &r
	}
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := p.health(hctx)
	cancel()
	p.res.HealthAfter = err == nil
	health := "answers"
	switch {
	case sr != nil && !sr.Alive:
		health = "server process gone"
	case err != nil:
		health = "no answer (" + shortErr(err) + ")"
		p.res.HealthAfterErr = shortErr(err)
	}
	if sr != nil {
		headline = append(headline, figure{"server RSS before / peak / after", fmt.Sprintf("%s / %s / %s", mib(sr.RSSBefore), mib(sr.RSSPeak), mib(sr.RSSAfter))})
		p.logf("server: RSS %s before, %s peak, %s %s after; CPU %.1f s; GET /health %s", mib(sr.RSSBefore), mib(sr.RSSPeak), mib(sr.RSSAfter), p.cfg.settle, sr.CPUS, health)
	} else {
		p.logf("GET /health %s", health)
	}
	headline = append(headline, figure{"GET /health after", health})
	if len(p.metricNames) > 0 {
		mctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.res.MetricsAfter = p.metrics(mctx, p.metricNames...)
		cancel()
	}
	if ctx.Err() != nil && p.res.Aborted == "" {
		p.res.Aborted = "timeout or signal: " + context.Cause(ctx).Error()
	}
	p.res.Headline = headline
	p.res.TotalS = round(time.Since(p.start).Seconds(), 2)
	line, err := json.Marshal(p.res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	fmt.Println(string(line))
	if p.cfg.out != "" {
		f, err := os.OpenFile(p.cfg.out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.Write(append(line, '\n'))
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
	}
}

// srvPeak is the server's peak RSS so far, -1 without -server-pid.
func (p *prober) srvPeak() int64 {
	if p.srv == nil {
		return -1
	}
	return p.srv.peak()
}

func (p *prober) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "probe %s %6.1fs: %s\n", p.name, time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// checkLoopback refuses a target that is not on 127.0.0.0/8, ::1 or
// localhost: these probes are attacks, for one's own server only.
func checkLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "ws" {
		return fmt.Errorf("target %q: want an http:// (or ws://) URL", rawURL)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address; refusing", rawURL)
	}
	return nil
}

// sleep waits d or until ctx is done; false means ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func round(f float64, digits int) float64 {
	s := fmt.Sprintf("%.*f", digits, f)
	var r float64
	fmt.Sscan(s, &r)
	return r
}

func mib(b int64) string {
	if b < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}
