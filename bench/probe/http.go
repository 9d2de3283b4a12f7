package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The history and expiry probes need no socket: a backend's HTTP calls,
// in volumes that used to cost the server. history publishes 60 KB
// messages to tens of thousands of distinct topics: with a bound per topic
// and none across topics, issue 9's server reached 3.9 GiB. expiry
// registers one user 100,000 times; when they all expired at once the
// expiry of each one walked the user's list, and other users'
// registrations waited up to 151 ms.

type historyFigures struct {
	Topics     int                `json:"topics"`
	Size       int                `json:"message_bytes"`
	Publishers int                `json:"publishers"`
	Attempted  int64              `json:"attempted"`
	OK         int64              `json:"ok"`
	Failed     int64              `json:"failed"`
	Statuses   map[string]int     `json:"statuses,omitempty"`
	RatePerS   float64            `json:"ok_per_s"`
	MBPerS     float64            `json:"mb_per_s"`
	Latency    summary            `json:"latency"`
	ElapsedS   float64            `json:"elapsed_s"`
	MetricsEnd map[string]float64 `json:"metrics_at_end,omitempty"`
}

var historyMetrics = []string{"relay_streams", "relay_history_bytes", "relay_history_evicted_total", "relay_streams_evicted_total"}

func setupHistory(fs *flag.FlagSet) runFunc {
	topics := fs.Int("topics", 20000, "distinct topics, one message each")
	size := fs.Int("size", 60000, "message bytes")
	publishers := fs.Int("publishers", 4, "concurrent keep-alive publishers")
	return func(ctx context.Context, p *prober) (any, []figure) {
		p.metricNames = historyMetrics
		start := time.Now()
		until := start.Add(p.cfg.duration)
		p.logf("publishing %d-byte messages to %d distinct topics with %d publishers (at most %s)", *size, *topics, *publishers, p.cfg.duration)
		msg := strings.Repeat("x", *size)
		var next, ok, failed atomic.Int64
		var statuses counts
		var lat latencies
		var wg sync.WaitGroup
		for range *publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := make([]byte, 0, *size+128)
				for ctx.Err() == nil && time.Now().Before(until) {
					i := next.Add(1)
					if i > int64(*topics) {
						return
					}
					body = append(body[:0], `{"topic":"hist.`...)
					body = append(body, p.runID...)
					body = append(body, '.')
					body = strconv.AppendInt(body, i, 10)
					body = append(body, `","message":"`...)
					body = append(body, msg...)
					body = append(body, `"}`...)
					t0 := time.Now()
					status, _, err := p.post(ctx, p.http, "/publish", body)
					switch {
					case err != nil:
						if ctx.Err() == nil {
							failed.Add(1)
							statuses.addErr(err)
						}
					case status != http.StatusOK:
						failed.Add(1)
						statuses.add(strconv.Itoa(status), 1)
					default:
						ok.Add(1)
						lat.add(time.Since(t0))
					}
				}
			}()
		}
		go func() {
			for sleep(ctx, 5*time.Second) && time.Now().Before(until) && ok.Load()+failed.Load() < int64(*topics) {
				p.logf("%d published, %d failed; server RSS peak %s", ok.Load(), failed.Load(), mib(p.srvPeak()))
			}
		}()
		wg.Wait()
		el := time.Since(start).Seconds()
		f := historyFigures{
			Topics: *topics, Size: *size, Publishers: *publishers, Attempted: min(next.Load(), int64(*topics)),
			OK: ok.Load(), Failed: failed.Load(), Statuses: statuses.snapshot(),
			RatePerS: round(float64(ok.Load())/el, 1), MBPerS: round(float64(ok.Load())*float64(*size)/el/1e6, 1),
			Latency: lat.summary(), ElapsedS: round(el, 2), MetricsEnd: p.metrics(ctx, historyMetrics...),
		}
		p.logf("%d published (%.0f/s, %.0f MB/s), %d failed (%s); latency %s", f.OK, f.RatePerS, f.MBPerS, f.Failed, countsText(f.Statuses), f.Latency)
		return f, []figure{
			{"publishes ok / failed", fmt.Sprintf("%d / %d (%.0f/s)", f.OK, f.Failed, f.RatePerS)},
		}
	}
}

type expiryFigures struct {
	Registrations int            `json:"registrations"`
	Clients       int            `json:"clients"`
	TTLS          float64        `json:"ttl_s"`
	OK            int64          `json:"ok"`
	Failed        int64          `json:"failed"`
	Errors        map[string]int `json:"errors,omitempty"`
	RegisterS     float64        `json:"register_s"`
	RatePerS      float64        `json:"register_per_s"`
	// The other user's registrations, every -probe-every: while the
	// 100,000 were made, while they waited, and while they expired.
	DuringRegister summary        `json:"latency_during_register"`
	Waiting        summary        `json:"latency_waiting"`
	Expiring       summary        `json:"latency_expiring"`
	ProbeErrors    map[string]int `json:"probe_errors,omitempty"`
	// Registrations the server held, once a second: [s since start, n].
	Held     [][2]float64 `json:"registrations_held,omitempty"`
	ElapsedS float64      `json:"elapsed_s"`
}

func setupExpiry(fs *flag.FlagSet) runFunc {
	n := fs.Int("registrations", 100000, "registrations of the one user")
	clients := fs.Int("clients", 8, "concurrent keep-alive clients registering")
	ttl := fs.Duration("ttl", 20*time.Second, "the server's -registration-ttl (start it with that)")
	every := fs.Duration("probe-every", 10*time.Millisecond, "register another user this often, timing it")
	return func(ctx context.Context, p *prober) (any, []figure) {
		p.metricNames = []string{"relay_registrations", "relay_registrations_expired_total"}
		start := time.Now()
		hardEnd := start.Add(p.cfg.duration)
		p.logf("registering user 5000000 %d times with %d clients; the server's TTL is %s", *n, *clients, *ttl)
		// The other user, timed from the start.
		var regEnd atomic.Int64
		var during, waiting, expiring latencies
		var probeErrs counts
		stopProbe := make(chan struct{})
		probeDone := make(chan struct{})
		go func() {
			defer close(probeDone)
			c := newHTTPClient(1)
			t := time.NewTicker(*every)
			defer t.Stop()
			for {
				select {
				case <-stopProbe:
					return
				case <-ctx.Done():
					return
				case <-t.C:
				}
				t0 := time.Now()
				_, err := p.register(ctx, c, 5_000_001)
				d := time.Since(t0)
				if err != nil {
					probeErrs.addErr(err)
					continue
				}
				switch e := regEnd.Load(); {
				case t0.After(start.Add(*ttl - time.Second)):
					expiring.add(d) // the first of the 100,000 are due
				case e == 0:
					during.add(d)
				default:
					waiting.add(d)
				}
			}
		}()
		var held [][2]float64
		stopHeld := make(chan struct{})
		heldDone := make(chan struct{})
		go func() {
			defer close(heldDone)
			for {
				m := p.metrics(ctx, "relay_registrations")
				if v, ok := m["relay_registrations"]; ok {
					held = append(held, [2]float64{round(time.Since(start).Seconds(), 1), v})
				}
				select {
				case <-stopHeld:
					return
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}()

		var next, ok, failed atomic.Int64
		var errs counts
		var wg sync.WaitGroup
		for range *clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newHTTPClient(1)
				for ctx.Err() == nil && time.Now().Before(hardEnd) && next.Add(1) <= int64(*n) {
					if _, err := p.register(ctx, c, 5_000_000); err != nil {
						failed.Add(1)
						errs.addErr(err)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		regS := time.Since(start).Seconds()
		regEnd.Store(time.Now().UnixNano())
		p.logf("%d registered in %.1f s (%d failed: %s); timing user 5000001's registrations while they expire", ok.Load(), regS, failed.Load(), errs.String())
		// The last registration is due ttl after it was made; the server
		// sweeps on its own period, so give it 10 s more.
		watchEnd := minTime(time.Now().Add(*ttl+10*time.Second), hardEnd)
		for sleep(ctx, 5*time.Second) && time.Now().Before(watchEnd) {
			p.logf("expiring: register latency so far %s", expiring.summary())
		}
		sleep(ctx, time.Until(watchEnd))
		close(stopProbe)
		close(stopHeld)
		<-probeDone
		<-heldDone
		f := expiryFigures{
			Registrations: *n, Clients: *clients, TTLS: ttl.Seconds(), OK: ok.Load(), Failed: failed.Load(), Errors: errs.snapshot(),
			RegisterS: round(regS, 2), RatePerS: round(float64(ok.Load())/regS, 1),
			DuringRegister: during.summary(), Waiting: waiting.summary(), Expiring: expiring.summary(),
			ProbeErrors: probeErrs.snapshot(), Held: held, ElapsedS: round(time.Since(start).Seconds(), 2),
		}
		p.logf("register latency of another user: while registering %s; waiting %s; while expiring %s", f.DuringRegister, f.Waiting, f.Expiring)
		return f, []figure{
			{"registrations of one user", fmt.Sprintf("%d in %.1f s (%d failed)", f.OK, f.RegisterS, f.Failed)},
			{"another user's register p99 / max, waiting", fmt.Sprintf("%.2f / %.2f ms", f.Waiting.P99, f.Waiting.Max)},
			{"another user's register p99 / max, while expiring", fmt.Sprintf("%.2f / %.2f ms", f.Expiring.P99, f.Expiring.Max)},
		}
	}
}
